"""``cherry-mlx info``: parameter and memory breakdown of a preset, model directory or run."""

from __future__ import annotations

import typer
from cherry_mlx_cli.options import command

from cherry_mlx.models.settings import InfoConfig


def register(app: typer.Typer) -> None:
    command(app, "info", InfoConfig, "cherry_mlx.models.info:show_info")
