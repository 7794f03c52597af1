"""``cherry-mlx eval``: held-out loss split by GT / non-GT, W, W̃, R, ROI, coupling γ̄ (options
generated from ``EvalConfig``'s fields)."""

from __future__ import annotations

import inspect
from typing import List, Optional

import typer
from cherry_mlx_cli.options import given, option_params, with_params


def eval_command(
    model: Optional[str] = typer.Argument(
        None, help="Run directory, checkpoint, model dir or preset (default: the latest run)."
    ),
    eta: Optional[List[float]] = typer.Option(
        None, help="Theorem-3 step size(s) (repeatable; default: 1% predicted GT drop, ×4, ×¼)."
    ),
    **options,
):
    """Measure what SGT did: loss on GT and non-GT tokens against the baseline, the wave
    factor W and W̃, recovered fraction R and ROI, gradient coupling γ̄."""
    from cherry_mlx.evaluation.config import EvalConfig
    from cherry_mlx.evaluation.measure import run_eval
    from cherry_mlx.evaluation.wave_table import format_result

    cfg = EvalConfig(model=model, etas=eta or None, **given(options))
    result = run_eval(cfg)
    typer.echo(format_result(result))
    if cfg.json_out:
        typer.echo(f"wrote {cfg.json_out}")


def _params():
    from cherry_mlx.evaluation.config import EvalConfig
    from cherry_mlx.training.config import field_specs

    fixed = list(inspect.signature(eval_command, eval_str=True).parameters.values())[:-1]
    specs = [s for s in field_specs(EvalConfig) if s[0] != "model"]
    return fixed + option_params(specs)


def register(app: typer.Typer) -> None:
    app.command("eval")(with_params(eval_command, _params()))
