"""Sovereign tokenizer: sentencepiece BPE with 24 governance special tokens and a chat template."""

from cherry_mlx.tokenizer.export import build_fast_tokenizer, chat_template, export_hf
from cherry_mlx.tokenizer.specials import (
    BOS,
    EOS,
    PAD,
    SPECIAL_IDS,
    SPECIAL_PIECES,
    SPECIAL_TOKENS,
    ks_x_1001_hangul,
)
from cherry_mlx.tokenizer.train import TokenizerConfig, train_sentencepiece, train_tokenizer

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "SPECIAL_IDS",
    "SPECIAL_PIECES",
    "SPECIAL_TOKENS",
    "TokenizerConfig",
    "build_fast_tokenizer",
    "chat_template",
    "export_hf",
    "ks_x_1001_hangul",
    "train_sentencepiece",
    "train_tokenizer",
]
