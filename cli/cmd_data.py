"""``cherry-mlx data build``: write the bundled default data set and prose corpora."""

from __future__ import annotations

import typer
from cherry_mlx_cli.options import command, group

from cherry_mlx.data.build import BuildConfig


def register(app: typer.Typer) -> None:
    data = group(app, "data", "Bundled data: build the default data set and prose corpora.")
    command(data, "build", BuildConfig, "cherry_mlx.pipelines.data_build:build_command")
