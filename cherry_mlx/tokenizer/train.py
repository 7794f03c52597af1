"""Train the sovereign sentencepiece BPE tokenizer (paper Section 5.1) and export it.

Choices, and why:
- BPE with byte fallback: any string encodes, never to ``<unk>``;
- the 2,350 KS X 1001 Hangul syllables (and printable ASCII) are required characters, so
  everyday Korean never falls back to bytes even when the corpus misses a syllable;
- identity normalisation, no dummy prefix, no whitespace collapsing: the token pieces concatenate
  back to exactly the input string, so character offsets (GT spans) map to tokens exactly;
- digits are split: numbers become one token per digit (arithmetic data, and number GT spans
  align with token boundaries);
- the 24 special tokens of ``specials.py`` are user-defined symbols at ids 1..24: sentencepiece
  and the exported fast tokenizer both match them in raw text and never split them. Newlines are
  not in the vocabulary on purpose: sentencepiece trains on lines, and byte fallback turns a
  newline into the single token ``<0x0A>``.
"""

from __future__ import annotations

import io
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

from cherry_mlx.tokenizer.export import export_hf
from cherry_mlx.tokenizer.specials import SPECIAL_PIECES, ks_x_1001_hangul

N_BYTE_PIECES = 256
PRINTABLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))  # the space is ▁, always present


@dataclass
class TokenizerConfig:
    """Settings of ``train_tokenizer`` (CLI: ``cherry-mlx tokenizer train``)."""

    vocab_size: int = 4096  # total pieces, specials and the 256 byte pieces included
    required_hangul: bool = True  # the 2,350 KS X 1001 syllables are always in the vocabulary
    character_coverage: float = 0.9995  # rarer characters fall back to bytes
    split_digits: bool = True
    max_piece_length: int = 16
    max_line_chars: int = 4000  # longer lines are cut into chunks (sentencepiece skips them)
    num_threads: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))
    model_max_length: Optional[int] = None  # recorded in tokenizer_config.json

    def __post_init__(self):
        if self.model_max_length is not None and self.model_max_length < 1:
            raise ValueError(
                f"--model-max-length {self.model_max_length} must be at least 1 (the context "
                "length in tokens), or left out"
            )
        if self.vocab_size < 1:
            raise ValueError(f"--vocab-size {self.vocab_size} must be at least 1")


def builtin_english() -> list[str]:
    """English prose shipped with CPython itself (``pydoc_data.topics``): always available."""
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]


def _lines(texts: Iterable[str], max_chars: int) -> Iterator[str]:
    # sentencepiece trains on lines; very long lines are cut rather than silently skipped
    for text in texts:
        for line in text.splitlines():
            for i in range(0, len(line), max_chars):
                chunk = line[i : i + max_chars]
                if chunk.strip():
                    yield chunk


def train_sentencepiece(texts: Iterable[str], cfg: TokenizerConfig) -> bytes:
    """Train the BPE model on ``texts``; returns the serialised sentencepiece model."""
    import sentencepiece as spm

    # printable ASCII is always in: with a small vocabulary, coverage pruning would otherwise
    # send rare capitals or brackets (V, Z, <) to byte pieces
    required = PRINTABLE_ASCII + (ks_x_1001_hangul() if cfg.required_hangul else "")
    floor = len(required) + N_BYTE_PIECES + len(SPECIAL_PIECES) + 1 + 100
    if cfg.vocab_size < floor:
        raise ValueError(
            f"vocab_size {cfg.vocab_size} is too small: the required characters, byte pieces "
            f"and special tokens alone take {floor - 100}; use --vocab-size >= {floor}"
            + (" or turn off required Hangul" if cfg.required_hangul else "")
        )
    lines = list(_lines(texts, cfg.max_line_chars))
    if not lines:
        raise ValueError("the tokenizer corpus is empty; pass text with --data")
    out = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=out,
            model_type="bpe",
            vocab_size=cfg.vocab_size,
            byte_fallback=True,
            required_chars=required,
            character_coverage=cfg.character_coverage,
            normalization_rule_name="identity",
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            split_digits=cfg.split_digits,
            max_sentencepiece_length=cfg.max_piece_length,
            max_sentence_length=cfg.max_line_chars * 4 + 16,  # bytes, UTF-8 Hangul is 3
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            user_defined_symbols=list(SPECIAL_PIECES),
            num_threads=cfg.num_threads,
            minloglevel=2,
        )
    except RuntimeError as err:
        raise ValueError(
            f"sentencepiece could not train a {cfg.vocab_size}-piece vocabulary on "
            f"{len(lines)} lines ({str(err).strip()}); lower --vocab-size or add data"
        ) from None
    return out.getvalue()


def train_tokenizer(
    texts: Iterable[str],
    out_dir: str | Path = "runs/tokenizer",
    cfg: Optional[TokenizerConfig] = None,
    english_builtin: bool = False,
    verbose: bool = True,
    source: str = "texts",
) -> Path:
    """Train on ``texts`` (plus CPython's ``pydoc_data`` English with ``english_builtin``) and
    export the HF layout. Reading corpus files is the data layer's job (``data.corpus``)."""
    cfg = cfg or TokenizerConfig()
    corpus: list[str] = list(texts)
    if english_builtin:
        corpus += builtin_english()
    n_chars = sum(len(t) for t in corpus)
    if verbose:
        print(f"tokenizer corpus: {source} + builtin={english_builtin}, {n_chars:,} characters",
              file=sys.stderr)  # fmt: skip
    t0 = time.perf_counter()
    proto = train_sentencepiece(corpus, cfg)
    out = export_hf(proto, Path(out_dir), cfg.model_max_length)
    if verbose:
        dt = time.perf_counter() - t0
        print(
            f"trained a {cfg.vocab_size}-piece BPE tokenizer in {dt:.1f}s "
            f"({n_chars / max(dt, 1e-9):,.0f} chars/s) -> {out}",
            file=sys.stderr,
        )
    return out
