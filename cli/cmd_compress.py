"""``cherry-mlx compress`` (merge + recurrent unroll + SGT healing, sweeps, layer diagnostics) and
``cherry-mlx upscale`` (SOLAR-style depth up-scaling)."""

from __future__ import annotations

from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def compress(
        model: Optional[str] = typer.Argument(
            None, help="Model dir, run or preset (default: latest run)."
        ),
        to: Optional[str] = typer.Option(
            None, "--to", help="Unique layers after merging, e.g. 6L."
        ),
        factor: Optional[int] = typer.Option(
            None, "--factor", help="Or: merge every r adjacent layers."
        ),
        groups: Optional[str] = typer.Option(
            None, "--groups", help="Or: explicit grouping, sizes 3,3,2 or ranges 0-2,3-5,6-7."
        ),
        loops: int = typer.Option(
            1, "--loops", help="Core loops after merging (1 = no recurrence)."
        ),
        prelude: Optional[int] = typer.Option(
            None, "--prelude", help="Unique layers before the looped core (default 1)."
        ),
        coda: Optional[int] = typer.Option(
            None, "--coda", help="Unique layers after the looped core (default 1)."
        ),
        layout: Optional[str] = typer.Option(
            None,
            "--layout",
            help="Prelude,core,coda at once, e.g. 4,16,4 (alone it also sets --to P+C+Q).",
        ),
        heal: bool = typer.Option(
            True, "--heal/--no-heal", help="SGT-heal (else merge+unroll only)."
        ),
        pre_unroll_steps: int = typer.Option(
            100, help="SGT steps on the merged model before unrolling."
        ),
        heal_steps: int = typer.Option(500, help="SGT steps after unrolling."),
        data: Optional[str] = typer.Option(
            None, help="Data dir with train/valid.jsonl (default: bundled)."
        ),
        tokenizer: Optional[str] = typer.Option(None, help="Tokenizer dir (default: the model's)."),
        batch_size: int = typer.Option(16, help="Sequences per healing step."),
        seq_len: int = typer.Option(256, help="Maximum sequence length."),
        learning_rate: float = typer.Option(1e-3, help="Peak healing learning rate."),
        lam: float = typer.Option(0.7, "--lambda", help="λ of the SGT loss."),
        seed: int = typer.Option(0, help="Seed of data order."),
        eval_batches: int = typer.Option(-1, help="Held-out batches per evaluation (-1 = all)."),
        control: bool = typer.Option(
            False,
            "--control",
            help="Also train the uncompressed source for the same total steps (fair reference).",
        ),
        grad_checkpoint: bool = typer.Option(False, help="Recompute each block call in backward."),
        out: Optional[str] = typer.Option(
            None, "--out", "-o", help="Output dir (default runs/...)."
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
    ):
        """Merge adjacent layers, unroll a weight-tied core and heal with SGT.

        Example: cherry-mlx compress runs/my-run --to 4L --loops 4 --pre-unroll-steps 100
        --heal-steps 500 (8 layers -> 4 unique, P1 C2 Q1 looped 4x = 10 effective layers)."""
        from cherry_mlx.compression.heal import CompressConfig

        if layout is not None and (prelude is not None or coda is not None):
            raise ValueError("give --layout P,C,Q or --prelude/--coda, not both")
        cfg = CompressConfig(
            model=model,
            out=out,
            to=to,
            factor=factor,
            groups=groups,
            loops=loops,
            prelude=1 if prelude is None else prelude,
            coda=1 if coda is None else coda,
            layout=layout,
            heal=heal,
            pre_unroll_steps=pre_unroll_steps,
            heal_steps=heal_steps,
            data=data,
            tokenizer=tokenizer,
            batch_size=batch_size,
            seq_len=seq_len,
            learning_rate=learning_rate,
            lam=lam,
            seed=seed,
            eval_batches=eval_batches,
            grad_checkpoint=grad_checkpoint,
            control=control,
        )
        if analyze:
            from cherry_mlx.compression.analyze import run_analysis

            run_analysis(cfg, out_dir=out, log=typer.echo)
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
    ):
        """Depth up-scaling (SOLAR DUS): two copies of the stack, overlap dropped or duplicated."""
        from cherry_mlx.compression.upscale import upscale as run_upscale

        run_upscale(model, to, overlap, out, log=typer.echo)
