"""``cherry-mlx tokenizer``: train the sovereign tokenizer, inspect encodings, list specials."""

from __future__ import annotations

import typer
from cherry_mlx_cli.options import command
from cherry_mlx_cli.style import StyledGroup

from cherry_mlx.training.tokenizer_settings import (
    EncodeConfig,
    SpecialsConfig,
    TokenizerTrainConfig,
)


def register(app: typer.Typer) -> None:
    tok = typer.Typer(
        cls=StyledGroup,
        help="Sovereign sentencepiece BPE tokenizer with 24 governance special tokens.",
        no_args_is_help=True,
    )
    command(tok, "train", TokenizerTrainConfig, "cherry_mlx.training.tokenizer:train_command")
    command(tok, "encode", EncodeConfig, "cherry_mlx.training.tokenizer:encode_command")
    command(tok, "specials", SpecialsConfig, "cherry_mlx.training.tokenizer:specials_command")
    app.add_typer(tok, name="tokenizer")
