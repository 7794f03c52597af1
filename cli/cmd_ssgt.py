"""``cherry-mlx ssgt-eval`` (self-correction, verification, jailbreak and false-refusal rates) and
``cherry-mlx ssgt-retention`` (how much of a taught SSGT moment a model keeps, Table 11)."""

from __future__ import annotations

import typer
from cherry_mlx_cli.options import command

from cherry_mlx.evaluation.config import RetentionConfig, SSGTEvalConfig


def register(app: typer.Typer) -> None:
    command(app, "ssgt-eval", SSGTEvalConfig, "cherry_mlx.evaluation.ssgt_report:run_ssgt_eval")
    command(
        app, "ssgt-retention", RetentionConfig,
        "cherry_mlx.evaluation.retention:retention_command",
    )  # fmt: skip
