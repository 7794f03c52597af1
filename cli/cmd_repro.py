"""``cherry-mlx repro``: the paper's experiments side by side with the paper (options generated
from ``ReproConfig``)."""

from __future__ import annotations

from typing import Optional

import typer
from cherry_mlx_cli.options import given, option_params, with_params


def repro_command(model: Optional[str] = None, **options):
    """Run the paper's experiments (SGT, compression, MTP, quantisation, MoEE) at a budget and
    write report.md + plots with the paper's numbers, ours, controls and verdicts. Rerun with the
    same -o to resume a killed run. Example: cherry-mlx repro --budget tiny -o runs/repro-tiny"""
    from cherry_mlx.pipelines.config import ReproConfig
    from cherry_mlx.pipelines.repro import run_repro

    cfg = ReproConfig(**given({"model": model, **options}))
    run_repro(cfg, log=typer.echo)


def _params():
    import inspect

    from cherry_mlx.pipelines.config import ReproConfig
    from cherry_mlx.training.config import field_specs

    model = inspect.Parameter(
        "model", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Optional[str],
        default=typer.Argument(None, help="Source model: dir, run or preset (default cherry-tiny)"),
    )  # fmt: skip
    return [model] + option_params(field_specs(ReproConfig)[1:])


with_params(repro_command, _params())


def register(app: typer.Typer) -> None:
    app.command(name="repro")(repro_command)
