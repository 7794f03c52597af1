"""``cherry-mlx eval``: held-out loss split by GT / non-GT, W, W̃, R, ROI, coupling γ̄ (options
generated from ``EvalConfig``'s fields)."""

from __future__ import annotations

import typer
from cherry_mlx_cli.options import command

from cherry_mlx.evaluation.config import EvalConfig


def register(app: typer.Typer) -> None:
    command(app, "eval", EvalConfig, "cherry_mlx.evaluation.measure:eval_command")
