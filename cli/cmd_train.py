"""``cherry-mlx train``: SGT training (the options are generated from ``TrainConfig``'s fields)."""

from __future__ import annotations

import inspect
import typing
from typing import List, Optional

import typer

# The options are generated from TrainConfig's fields (one list of settings with help text);
# training.config imports no MLX, so building them keeps `--help` instant.


def _option_type(tp):
    """Typer-friendly Optional[...] type for a dataclass field type (given as a string)."""
    s = str(tp)
    if "bool" in s:
        return Optional[bool]
    if "int" in s and "List" not in s:
        return Optional[int]
    if "float" in s:
        return Optional[float]
    return Optional[str]


def _build_signature():
    from cherry_mlx.training.config import field_specs

    params = [
        inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Optional[str],
            default=typer.Option(
                None, "--config", "-c", help="YAML/JSON settings file (command line wins over it)."
            ),
        )
    ]
    for name, tp, default, help_text, flag in field_specs():
        otype = _option_type(tp)
        flags = [flag]
        if otype is Optional[bool]:
            flags = [f"{flag}/--no-{flag[2:]}"]
        shown = ",".join(default) if isinstance(default, list) else default
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=otype,
                default=typer.Option(
                    None,
                    *flags,
                    help=help_text,
                    show_default=str(shown) if shown is not None else False,
                ),
            )
        )
    return inspect.Signature(params)


def train_command(**kwargs):
    """Train with the SGT loss: `cherry-mlx train` alone trains cherry-tiny from scratch on the
    bundled data in a few minutes. Runs go to runs/NAME/ (checkpoints, best/, metrics, curves)."""
    from cherry_mlx.training import resolve_config, train
    from cherry_mlx.training.summary import print_summary

    config_file = kwargs.pop("config", None)
    cfg = resolve_config(kwargs, config_file)
    try:
        result = train(cfg)
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

    from cherry_mlx.training.checkpoint import list_checkpoints
    from cherry_mlx.training.runs import RUNS_DIR

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


train_command.__signature__ = _build_signature()
train_command.__annotations__ = {
    p.name: p.annotation for p in train_command.__signature__.parameters.values()
}


def register(app: typer.Typer) -> None:
    app.command(name="train")(train_command)


__all__: List[str] = ["register"]
_ = typing  # keep import for annotations evaluated by typer
