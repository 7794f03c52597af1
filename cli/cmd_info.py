"""``cherry-mlx info``: parameter and memory breakdown of a preset, model directory or run."""

from __future__ import annotations

import typer

from cherry_mlx.models.presets import DEFAULT_PRESET


def register(app: typer.Typer) -> None:
    @app.command()
    def info(
        model: str = typer.Argument(
            DEFAULT_PRESET, help="Preset name, model directory, run or hub id."
        ),
        json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ):
        """Parameters by component, effective depth and weight memory (nothing is allocated)."""
        from cherry_mlx.models.info import describe, format_table

        report = describe(model)
        if json_out:
            import json

            typer.echo(json.dumps(report, indent=2))
        else:
            typer.echo(format_table(report))
