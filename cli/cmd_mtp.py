"""``cherry-mlx train-mtp``: MTP heads fitted on a frozen model from a teacher cache of its own
replies (options generated from ``TrainMTPConfig``)."""

from __future__ import annotations

import typer
from cherry_mlx_cli.options import command

from cherry_mlx.training.mtp_fit_config import TrainMTPConfig


def register(app: typer.Typer) -> None:
    command(app, "train-mtp", TrainMTPConfig, "cherry_mlx.training.mtp_fit:train_mtp_command")
