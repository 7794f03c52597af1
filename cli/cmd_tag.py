"""``cherry-mlx tag``: add GT spans to JSONL data and report GT ratio, category shares and, on data
with known spans, the rules' precision/recall; optionally contrastive refinement with a model."""

from __future__ import annotations

import typer
from cherry_mlx_cli.options import command

from cherry_mlx.evaluation.config import TagFileConfig


def register(app: typer.Typer) -> None:
    command(app, "tag", TagFileConfig, "cherry_mlx.evaluation.tagging:tag_command")
