"""``cherry-mlx fuse`` (assemble compressed experts into a MoEE, train its router) and
``cherry-mlx distill`` (SGT distillation from a frozen teacher, Eq. 11).

"fuse" here is the paper's expert fusion, not mlx-lm's ``fuse`` (which folds LoRA adapters).
"""

from __future__ import annotations

import inspect
from typing import List

import typer
from cherry_mlx_cli.options import given, phase_params, with_params


def fuse_command(
    experts: List[str] = typer.Argument(..., help="Expert models (dirs, runs or presets)."),
    ablate: bool = typer.Option(
        False, "--ablate", help="Run the Table 7 ladder (alone, +SGT, +MTP, +balance)."
    ),
    **options,
):
    """Assemble compressed experts behind a learned top-k gate and train it with SGT."""
    import json

    from cherry_mlx.fusion.config import FuseConfig
    from cherry_mlx.fusion.run import ablate as run_ablate
    from cherry_mlx.fusion.run import fuse as run_fuse

    cfg = FuseConfig.from_flat(experts=list(experts), **given(options))
    if ablate:
        rep = run_ablate(cfg)
        typer.echo(f"ablation written to {rep['out']} (ablation.md, ablation.png)")
        return
    rep, _ = run_fuse(cfg)
    typer.echo(json.dumps({k: rep[k] for k in ("eval", "routing", "cost")}, indent=2))
    ev = rep["eval"]
    typer.echo(
        f"held-out loss: fused {ev['total']:.4f} (GT {ev['gt']:.4f}, non-GT {ev['non_gt']:.4f})"
    )
    for e in rep.get("experts_eval") or []:
        typer.echo(
            f"  expert alone {e['total']:.4f} (GT {e['gt']:.4f}, non-GT {e['non_gt']:.4f})"
            f"  {e['expert']}"
        )
    if rep.get("out"):
        typer.echo(f"fused model written to {rep['out']} (fuse_report.json)")
    if rep.get("run_dir"):
        typer.echo(f"training run (metrics, curves, checkpoints): {rep['run_dir']}")


def distill_command(**options):
    """Distil a frozen (optionally NVFP4) teacher into a student at GT positions (Eq. 11)."""
    from cherry_mlx.fusion.config import DistillConfig
    from cherry_mlx.fusion.distill import distill as run_distill

    rep = run_distill(DistillConfig.from_flat(**given(options)))
    for r in rep["kd"]:
        typer.echo(
            f"step {r['step']:>5}  KL {r['kd']:.4f}  loss {r['total']:.4f}  "
            f"GT {r['gt']:.4f}  non-GT {r['non_gt']:.4f}"
        )
    typer.echo(f"run written to {rep['run_dir']} (distill_report.json, distill.png)")


def _params(fn, cls, skip=()):
    fixed = list(inspect.signature(fn, eval_str=True).parameters.values())[:-1]
    return fixed + phase_params(cls, skip=skip)


def register(app: typer.Typer) -> None:
    from cherry_mlx.fusion.config import DistillConfig, FuseConfig

    app.command(name="fuse")(
        with_params(fuse_command, _params(fuse_command, FuseConfig, ("experts",)))
    )
    app.command(name="distill")(
        with_params(distill_command, _params(distill_command, DistillConfig))
    )
