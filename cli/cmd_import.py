"""``cherry-mlx import``: a GGUF file (or a packaged short name) into a hub-layout folder."""

from __future__ import annotations

import typer
from cherry_mlx_cli.options import command

from cherry_mlx.models.settings import ImportConfig


def register(app: typer.Typer) -> None:
    command(app, "import", ImportConfig, "cherry_mlx.models.gguf:import_command")
