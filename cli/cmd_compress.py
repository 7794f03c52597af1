"""``cherry-mlx compress`` (merge + recurrent unroll + SGT healing, sweeps, layer diagnostics),
``cherry-mlx upscale`` (SOLAR-style depth up-scaling) and ``cherry-mlx plan`` (the same from
config.json alone)."""

from __future__ import annotations

import typer
from cherry_mlx_cli.options import command

from cherry_mlx.compression.config import CompressConfig, PlanConfig, UpscaleConfig


def register(app: typer.Typer) -> None:
    command(app, "compress", CompressConfig, "cherry_mlx.compression.run:compress_command")
    command(app, "upscale", UpscaleConfig, "cherry_mlx.compression.upscale:upscale_command")
    command(app, "plan", PlanConfig, "cherry_mlx.compression.plan:plan_command")
