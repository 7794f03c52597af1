"""Export a trained sentencepiece BPE model to the Hugging Face tokenizer layout.

Written files: ``tokenizer.model`` (the sentencepiece proto, for sentencepiece users),
``tokenizer.json`` (a ``tokenizers`` fast tokenizer, so offsets mappings work),
``tokenizer_config.json`` (chat template, special tokens, eos), ``special_tokens_map.json`` and
``generation_config.json``. ``transformers.AutoTokenizer`` and ``mlx_lm``'s tokenizer loader both
read the directory.

We build ``tokenizer.json`` directly instead of going through transformers' slow-to-fast converter:
our sentencepiece model uses identity normalisation, no dummy prefix and byte fallback, and the
converter's Llama/Spm defaults (prefix space, whitespace collapsing, a warning that byte fallback
is unsupported) would each break the exact equivalence with sentencepiece that the tests check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from cherry_mlx.tokenizer.specials import BOS, EOS, PAD, SPECIAL_PIECES, UNK

TEMPLATE_FILE = Path(__file__).with_name("chat_template.jinja")


def chat_template() -> str:
    """The Jinja chat template shipped with every cherry-mlx tokenizer."""
    return TEMPLATE_FILE.read_text(encoding="utf-8")


def _bpe_merges(vocab: dict[str, int], skip: set[str]) -> list[tuple[str, str]]:
    """Merge list equivalent to sentencepiece BPE: every split of a piece into two vocabulary
    pieces, ranked by the piece's id (sentencepiece orders BPE pieces by merge order/score)."""
    merges = []
    for piece, pid in vocab.items():
        if piece in skip or len(piece) < 2:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab and left not in skip and right not in skip:
                merges.append((pid, vocab[left], vocab[right], left, right))
    merges.sort()
    return [(m[3], m[4]) for m in merges]


def build_fast_tokenizer(model_proto: bytes):
    """A ``tokenizers.Tokenizer`` that encodes exactly like the sentencepiece model."""
    import sentencepiece as spm
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE

    sp = spm.SentencePieceProcessor(model_proto=model_proto)
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    bytes_pieces = {p for p in vocab if p.startswith("<0x") and len(p) == 6}
    specials = [UNK, *SPECIAL_PIECES]
    merges = _bpe_merges(vocab, set(specials) | bytes_pieces)
    tok = Tokenizer(
        BPE(vocab=vocab, merges=merges, unk_token=UNK, fuse_unk=True, byte_fallback=True)
    )
    # identity normalisation: only the space -> ▁ substitution sentencepiece applies internally,
    # so offsets point into the original string.
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tok.add_special_tokens([AddedToken(p, normalized=False, special=True) for p in specials])
    # plain `encode(text)` starts with bos, as a model trained on bos-prefixed documents expects
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return tok


def export_hf(model_proto: bytes, out_dir: Path, model_max_length: Optional[int] = None) -> Path:
    """Write the Hugging Face tokenizer files for ``model_proto`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_fast_tokenizer(model_proto)
    (out_dir / "tokenizer.model").write_bytes(model_proto)
    tok.save(str(out_dir / "tokenizer.json"))
    ids = {p: tok.token_to_id(p) for p in (BOS, EOS, PAD, UNK)}
    special_map = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "unk_token": UNK}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_map,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length or 1_000_000,
        "chat_template": chat_template(),
    }
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    gen = {"bos_token_id": ids[BOS], "eos_token_id": ids[EOS], "pad_token_id": ids[PAD]}
    (out_dir / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    return out_dir
