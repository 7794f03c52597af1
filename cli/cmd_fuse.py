"""``cherry-mlx fuse`` (assemble compressed experts into a MoEE, train its router) and
``cherry-mlx distill`` (SGT distillation from a frozen teacher, Eq. 11).

"fuse" here is the paper's expert fusion, not mlx-lm's ``fuse`` (which folds LoRA adapters).
"""

from __future__ import annotations

from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def fuse(
        experts: List[str] = typer.Argument(..., help="Expert models (dirs, runs or presets)."),
        out: Optional[str] = typer.Option(None, "-o", "--out", help="Fused model directory."),
        top_k: int = typer.Option(1, "--top-k", help="Experts mixed per token (Eq. 10)."),
        granularity: str = typer.Option(
            "model", help="model: whole experts (paper); layer: routed FFNs, shared attention."
        ),
        shared: bool = typer.Option(True, help="One shared (averaged) embedding and LM head."),
        mtp_heads: int = typer.Option(0, "--mtp-heads", help="MTP heads to add (needs --shared)."),
        balance: float = typer.Option(0.01, help="α of the load-balancing loss α·N·Σ f_i·P_i."),
        mtp_weight: float = typer.Option(0.3, "--mtp-weight", help="β of the MTP loss."),
        lam: float = typer.Option(0.7, "--lambda", help="λ of the SGT loss (Eq. 2)."),
        train_experts: bool = typer.Option(
            False, "--train-experts", help="Train the experts too (default: gate + heads)."
        ),
        steps: int = typer.Option(100, help="Training steps (0 = assemble only)."),
        batch_size: int = typer.Option(8, "--batch-size"),
        seq_len: int = typer.Option(256, "--seq-len"),
        learning_rate: float = typer.Option(1e-3, "--learning-rate"),
        data: Optional[str] = typer.Option(None, help="Data dir (default: the bundled data)."),
        tokenizer: Optional[str] = typer.Option(None, help="Tokenizer dir (default: experts')."),
        name: Optional[str] = typer.Option(None, help="Run name under runs/."),
        seed: int = typer.Option(0),
        ablate: bool = typer.Option(
            False, "--ablate", help="Run the Table 7 ladder (alone, +SGT, +MTP, +balance)."
        ),
    ):
        """Assemble compressed experts behind a learned top-k gate and train it with SGT."""
        import json

        from cherry_mlx.fusion.run import FuseConfig
        from cherry_mlx.fusion.run import ablate as run_ablate
        from cherry_mlx.fusion.run import fuse as run_fuse

        cfg = FuseConfig(
            experts=list(experts), out=out, granularity=granularity, top_k=top_k, shared=shared,
            mtp_heads=mtp_heads, balance=balance, mtp_weight=mtp_weight, lam=lam,
            train_experts=train_experts, steps=steps, batch_size=batch_size, seq_len=seq_len,
            learning_rate=learning_rate, data=data, tokenizer=tokenizer, name=name, seed=seed,
        )  # fmt: skip
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

    @app.command()
    def distill(
        teacher: str = typer.Option(..., "--teacher", help="Frozen teacher model."),
        student: str = typer.Option(..., "--student", help="Student model to train."),
        positions: str = typer.Option("gt", help="gt: Eq. 11 at GT positions; all: every one."),
        teacher_quant: str = typer.Option(
            "none", "--teacher-quant", help="Quantise the teacher: none, nvfp4, mxfp4, affine."
        ),
        beta: float = typer.Option(1.0, help="Weight of the KL sum next to the SGT loss."),
        lam: float = typer.Option(0.7, "--lambda", help="λ of the SGT loss (Eq. 2)."),
        steps: int = typer.Option(100),
        batch_size: int = typer.Option(8, "--batch-size"),
        seq_len: int = typer.Option(256, "--seq-len"),
        learning_rate: float = typer.Option(1e-3, "--learning-rate"),
        eval_every: int = typer.Option(25, "--eval-every"),
        data: Optional[str] = typer.Option(None, help="Data dir (default: the bundled data)."),
        name: Optional[str] = typer.Option(None, help="Run name under runs/."),
        seed: int = typer.Option(0),
    ):
        """Distil a frozen (optionally NVFP4) teacher into a student at GT positions (Eq. 11)."""
        from cherry_mlx.fusion.distill import DistillConfig
        from cherry_mlx.fusion.distill import distill as run_distill

        cfg = DistillConfig(
            teacher=teacher, student=student, positions=positions, teacher_quant=teacher_quant,
            beta=beta, lam=lam, steps=steps, batch_size=batch_size, seq_len=seq_len,
            learning_rate=learning_rate, eval_every=eval_every, data=data, name=name, seed=seed,
        )  # fmt: skip
        rep = run_distill(cfg)
        for r in rep["kd"]:
            typer.echo(
                f"step {r['step']:>5}  KL {r['kd']:.4f}  loss {r['total']:.4f}  "
                f"GT {r['gt']:.4f}  non-GT {r['non_gt']:.4f}"
            )
        typer.echo(f"run written to {rep['run_dir']} (distill_report.json, distill.png)")
