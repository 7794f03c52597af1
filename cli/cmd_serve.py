"""``cherry-mlx generate`` and ``cherry-mlx chat``: local serving, speculative with MTP heads."""

from __future__ import annotations

import typer
from cherry_mlx_cli.options import command

from cherry_mlx.decoding.settings import ChatConfig, GenerateConfig


def register(app: typer.Typer) -> None:
    command(app, "generate", GenerateConfig, "cherry_mlx.decoding.session:generate_command")
    command(app, "chat", ChatConfig, "cherry_mlx.decoding.session:chat_command")
