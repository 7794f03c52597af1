"""``cherry-mlx tokenizer``: train the sovereign tokenizer, inspect encodings, list specials."""

from __future__ import annotations

import typer
from cherry_mlx_cli.options import command, group

from cherry_mlx.training.tokenizer_settings import (
    EncodeConfig,
    SpecialsConfig,
    TokenizerTrainConfig,
)


def register(app: typer.Typer) -> None:
    tok = group(
        app, "tokenizer", "Sovereign sentencepiece BPE tokenizer with 24 governance special tokens."
    )
    command(tok, "train", TokenizerTrainConfig, "cherry_mlx.training.tokenizer:train_command")
    command(tok, "encode", EncodeConfig, "cherry_mlx.training.tokenizer:encode_command")
    command(tok, "specials", SpecialsConfig, "cherry_mlx.training.tokenizer:specials_command")
