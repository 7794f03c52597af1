"""``cherry-mlx train``: SGT training (the options are generated from ``TrainConfig``'s fields)."""

from __future__ import annotations

import inspect
from typing import List, Optional

import typer
from cherry_mlx_cli.options import option_params, with_params


def _build_params():
    from cherry_mlx.training.config import field_specs

    config = inspect.Parameter(
        "config",
        inspect.Parameter.KEYWORD_ONLY,
        annotation=Optional[str],
        default=typer.Option(
            None, "--config", "-c", help="YAML/JSON settings file (command line wins over it)."
        ),
    )
    return [config] + option_params(field_specs())


def train_command(**kwargs):
    """Train with the SGT loss: `cherry-mlx train` alone trains cherry-48l (48 narrow layers) from
    scratch on the bundled data in minutes. Runs go to runs/NAME/ (checkpoints, best/, metrics,
    curves)."""
    from dataclasses import replace

    from cherry_mlx import training
    from cherry_mlx.evaluation.demo import Demo
    from cherry_mlx.evaluation.mtp import MTPAccuracyReport
    from cherry_mlx.training.setup import default_run_name
    from cherry_mlx.training.summary import print_summary

    config_file = kwargs.pop("config", None)
    cfg = training.resolve_config(kwargs, config_file)
    if not cfg.name and not cfg.resume:  # named here, so Ctrl-C can say which run to resume
        cfg = replace(cfg, name=default_run_name(cfg))
    callbacks = ([Demo()] if cfg.demo else []) + ([MTPAccuracyReport()] if cfg.mtp else [])
    try:
        result = training.train(cfg, callbacks=callbacks)
    except KeyboardInterrupt:
        _interrupted(cfg)
        raise typer.Exit(130) from None
    from cherry_mlx.training.distributed import current_ranks

    if current_ranks().main:  # under mlx.launch the other ranks stay quiet
        print_summary(result)


def _interrupted(cfg) -> None:
    """Ctrl-C: say where the run stands and how to continue it (one line each, no traceback)."""
    import sys
    from pathlib import Path

    from cherry_mlx.models.runs import RUNS_DIR, list_checkpoints

    if not cfg.name:
        print("\ninterrupted before the run started", file=sys.stderr)
        return
    run_dir = (Path(cfg.runs_dir) if cfg.runs_dir else RUNS_DIR) / cfg.name
    if cfg.resume and cfg.resume != "latest" and Path(cfg.resume).is_dir():
        run_dir = Path(cfg.resume)
    found = list_checkpoints(run_dir)
    if not found:
        print(f"\ninterrupted: {run_dir} has no checkpoint yet; start it again", file=sys.stderr)
        return
    print(
        f"\ninterrupted: last checkpoint {found[-1]} (later steps are not kept); "
        f"continue with: cherry-mlx train --resume {run_dir}",
        file=sys.stderr,
    )


with_params(train_command, _build_params())


def register(app: typer.Typer) -> None:
    app.command(name="train")(train_command)


__all__: List[str] = ["register"]
