"""``cherry-mlx data build``: write the bundled default data set and prose corpora."""

from __future__ import annotations

import typer
from cherry_mlx_cli.options import command
from cherry_mlx_cli.style import StyledGroup

from cherry_mlx.data.build import BuildConfig


def register(app: typer.Typer) -> None:
    data = typer.Typer(
        cls=StyledGroup,
        help="Bundled data: build the default data set and prose corpora.",
        no_args_is_help=True,
    )
    command(data, "build", BuildConfig, "cherry_mlx.data.build:build")
    app.add_typer(data, name="data")
