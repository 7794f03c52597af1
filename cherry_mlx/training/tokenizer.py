"""The ``cherry-mlx tokenizer`` commands: train the sovereign tokenizer on corpus files, show an
encoding, list the special tokens."""

from __future__ import annotations

from pathlib import Path

from cherry_mlx.data.corpus import default_corpus_files, read_corpus
from cherry_mlx.models.loading import resolve
from cherry_mlx.models.outputs import check_output
from cherry_mlx.tokenizer import TokenizerConfig, train_tokenizer
from cherry_mlx.tokenizer.inspect import format_encoding, load_any_tokenizer
from cherry_mlx.tokenizer.specials import SPECIAL_IDS, SPECIAL_TOKENS
from cherry_mlx.training.prepare import find_tokenizer
from cherry_mlx.training.tokenizer_settings import (
    EncodeConfig,
    SpecialsConfig,
    TokenizerTrainConfig,
)


def train_command(cfg: TokenizerTrainConfig) -> Path:
    """Train on ``cfg.data`` (default: the bundled corpora) and write to ``cfg.out``."""
    files = list(cfg.data) if cfg.data else default_corpus_files()
    check_output(cfg.out, files, cfg.force, weights_ok=False)
    tcfg = TokenizerConfig(
        vocab_size=cfg.vocab_size,
        required_hangul=cfg.required_hangul,
        model_max_length=cfg.model_max_length,
    )
    # pydoc English by default only when there is no other corpus (a fresh checkout)
    english = (not files) if cfg.builtin_english is None else cfg.builtin_english
    train_tokenizer(read_corpus(files), cfg.out, tcfg, english, source=f"{len(files)} files")
    return Path(cfg.out)


def encode_command(cfg: EncodeConfig, log=print) -> None:
    """Print the pieces and ids of ``cfg.text`` under ``cfg.tokenizer``."""
    path = find_tokenizer(cfg.tokenizer) or resolve(cfg.tokenizer)
    log(format_encoding(load_any_tokenizer(path), cfg.text))


def specials_command(cfg: SpecialsConfig, log=print) -> None:
    """Print the governance special tokens: id, piece, group, purpose."""
    for t in SPECIAL_TOKENS:
        log(f"{SPECIAL_IDS[t.piece]:3d}  {t.piece:26} {t.group:14} {t.purpose}")
