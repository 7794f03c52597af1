"""``cherry-mlx eval``: held-out loss split by GT / non-GT, W, W̃, R, ROI, coupling γ̄."""

from __future__ import annotations

from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        model: Optional[str] = typer.Argument(
            None, help="Run directory, checkpoint, model dir or preset (default: the latest run)."
        ),
        baseline: Optional[str] = typer.Option(
            None, help="Baseline checkpoint (default: the run's step-0 checkpoint)."
        ),
        full_run: Optional[str] = typer.Option(
            None,
            "--full-run",
            help="Full-sequence run (or checkpoint) for R and ROI; its "
            "checkpoint at the same step is used.",
        ),
        data: Optional[str] = typer.Option(
            None, help="Held-out .jsonl, or a data directory (default: the bundled data)."
        ),
        split: str = typer.Option("valid", help="Split file in a data directory."),
        tokenizer: Optional[str] = typer.Option(None, help="Tokenizer (default: the model's)."),
        level: str = typer.Option("gt", help="GT set = level >= gt (1), super (2) or ssgt (3)."),
        categories: Optional[str] = typer.Option(None, help="Comma-separated GT categories."),
        batch_size: int = typer.Option(8, help="Sequences per batch."),
        seq_len: int = typer.Option(256, help="Maximum sequence length."),
        max_batches: int = typer.Option(-1, help="Held-out batches to use (-1 = all)."),
        supervised_fraction: Optional[float] = typer.Option(
            None, help="|G|/|T| for ROI (default: the GT share of the held-out response tokens)."
        ),
        coupling: bool = typer.Option(
            False, "--coupling", help="Measure γ̄ (Eq. 5) and check Theorem 3 by one GT step."
        ),
        coupling_batches: int = typer.Option(4, help="Batches the gradients are taken over."),
        eta: Optional[List[float]] = typer.Option(
            None, help="Theorem-3 step size(s) (repeatable; default: 1% predicted GT drop, ×4, ×¼)."
        ),
        shuffled: bool = typer.Option(
            False, "--shuffled", help="Repeat on token-shuffled responses (Corollary 5 control)."
        ),
        seed: int = typer.Option(0, help="Seed of the token shuffle."),
        json_out: Optional[str] = typer.Option(None, "--json", help="Write the results as JSON."),
        plot: Optional[str] = typer.Option(
            None, help="PNG of the losses (default: RUN/eval_wave.png when a run is evaluated)."
        ),
    ):
        """Measure what SGT did: loss on GT and non-GT tokens against the baseline, the wave
        factor W and W̃, recovered fraction R and ROI, gradient coupling γ̄."""
        from cherry_mlx.evaluation.measure import EvalConfig, run_eval
        from cherry_mlx.evaluation.wave_table import format_result

        cats = [c.strip() for c in categories.split(",") if c.strip()] if categories else None
        cfg = EvalConfig(
            model=model,
            baseline=baseline,
            full_run=full_run,
            data=data,
            split=split,
            tokenizer=tokenizer,
            level=level,
            categories=cats,
            batch_size=batch_size,
            seq_len=seq_len,
            max_batches=max_batches,
            supervised_fraction=supervised_fraction,
            coupling=coupling,
            coupling_batches=coupling_batches,
            etas=eta or None,
            shuffled=shuffled,
            seed=seed,
            json_out=json_out,
            plot=plot,
        )
        result = run_eval(cfg)
        typer.echo(format_result(result))
        if json_out:
            typer.echo(f"wrote {json_out}")
