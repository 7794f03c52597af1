"""``cherry-mlx compress`` (merge + recurrent unroll + SGT healing, sweeps, layer diagnostics) and
``cherry-mlx upscale`` (SOLAR-style depth up-scaling)."""

from __future__ import annotations

import inspect
from typing import Optional

import typer
from cherry_mlx_cli.options import given, phase_params, with_params


def compress_command(
    model: Optional[str] = typer.Argument(
        None, help="Model dir, run or preset (default: latest run)."
    ),
    sweep: bool = typer.Option(
        False, "--sweep", help="Sweep unique layers x loops (Tables 5, C.2)."
    ),
    sweep_to: Optional[str] = typer.Option(
        None, help="Sweep unique depths, e.g. 4,2 (default: divisors)."
    ),
    sweep_loops: str = typer.Option("1,2,4", help="Sweep loop counts, e.g. 1,2,4,8."),
    analyze: bool = typer.Option(
        False, "--analyze", help="Only print layer redundancy diagnostics."
    ),
    **options,
):
    """Merge adjacent layers, unroll a weight-tied core and heal with SGT.

    Example: cherry-mlx compress runs/my-run --to 4L --loops 4 --pre-unroll-steps 100
    --heal-steps 500 (8 layers -> 4 unique, P1 C2 Q1 looped 4x = 10 effective layers)."""
    from cherry_mlx.compression.config import CompressConfig

    cfg = CompressConfig.from_flat(model=model, **given(options))
    if analyze:
        from cherry_mlx.compression.analyze import run_analysis

        run_analysis(cfg, out_dir=cfg.out, log=typer.echo)
    elif sweep:
        from cherry_mlx.compression.sweep import parse_list
        from cherry_mlx.compression.sweep import sweep as run_sweep

        run_sweep(
            cfg,
            parse_list(sweep_to, "--sweep-to", depth=True),
            parse_list(sweep_loops, "--sweep-loops"),
            log=typer.echo,
        )
    else:
        from cherry_mlx.compression.heal import compress as run_compress

        run_compress(cfg, log=typer.echo)


def _compress_params():
    from cherry_mlx.compression.config import CompressConfig

    fixed = list(inspect.signature(compress_command, eval_str=True).parameters.values())[:-1]
    return fixed + phase_params(CompressConfig, skip=("model",))


def register(app: typer.Typer) -> None:
    app.command(name="compress")(with_params(compress_command, _compress_params()))

    @app.command()
    def upscale(
        model: str = typer.Argument(..., help="Model dir, run or preset to deepen."),
        to: str = typer.Option(..., "--to", help="Target depth, N < target <= 2N (e.g. 48L)."),
        overlap: str = typer.Option(
            "drop", help="drop: SOLAR, cut the seam; duplicate: keep copy A whole, repeat the top."
        ),
        out: Optional[str] = typer.Option(
            None, "--out", "-o", help="Output dir (default runs/...)."
        ),
        force: bool = typer.Option(
            False,
            "--force",
            help="Write into a non-empty -o, replacing only the files this "
            "command writes (never the source, a run, or other files).",
        ),
    ):
        """Depth up-scaling (SOLAR DUS): two copies of the stack, overlap dropped or duplicated."""
        from cherry_mlx.compression.upscale import upscale as run_upscale

        run_upscale(model, to, overlap, out, log=typer.echo, force=force)
