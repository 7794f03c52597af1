"""``cherry-mlx ssgt-retention``: how much of a taught SSGT moment a model keeps (Table 11)."""

from __future__ import annotations

from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("ssgt-retention")
    def ssgt_retention(
        reference: str = typer.Argument(
            ..., help="ssgt-eval --json report of the model with the moment (after SSGT)."
        ),
        candidate: str = typer.Argument(
            ..., help="Report of the model to compare (e.g. after further non-SSGT training)."
        ),
        baseline: Optional[str] = typer.Option(
            None, help="Report of the model before SSGT: adds the share of the gain kept."
        ),
    ):
        """Per-metric retention = candidate rate / reference rate (of good outcomes)."""
        from cherry_mlx.evaluation.retention import format_retention, load_report, retention

        base = load_report(baseline) if baseline else None
        rows = retention(load_report(reference), load_report(candidate), base)
        typer.echo(format_retention(rows))
