"""``cherry-mlx quantize``: NVFP4 (tensor scales folded), MXFP4 or affine 4/8-bit via MLX (options
generated from ``QuantizeConfig``)."""

from __future__ import annotations

from typing import Optional

import typer
from cherry_mlx_cli.options import given, option_params, with_params


def quantize_command(model: Optional[str] = None, **options):
    """Quantise a model; prints bits per weight, weight memory and the held-out loss and
    perplexity change against full precision. The result loads with cherry-mlx (and, for plain
    Llama configs, mlx_lm.load)."""
    from cherry_mlx.pipelines.quantize import run_quantize
    from cherry_mlx.pipelines.quantize_config import QuantizeConfig

    cfg = QuantizeConfig(**given({"model": model, **options}))
    typer.echo(run_quantize(cfg, log=lambda msg: typer.echo(msg, err=True)).summary())


def _params():
    import inspect

    from cherry_mlx.pipelines.quantize_config import QuantizeConfig
    from cherry_mlx.training.config import field_specs

    model = inspect.Parameter(
        "model", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Optional[str],
        default=typer.Argument(
            None, help="Model directory, run, preset or hub id (default: the latest run)."
        ),
    )  # fmt: skip
    return [model] + option_params(field_specs(QuantizeConfig)[1:])


with_params(quantize_command, _params())


def register(app: typer.Typer) -> None:
    app.command(name="quantize")(quantize_command)
