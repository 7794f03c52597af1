"""``cherry-mlx plan``: parameters, depth and memory of a model and its compressed versions,
from config.json alone (paper Tables 8 and 15)."""

from __future__ import annotations

from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def plan(
        config: str = typer.Argument(
            ...,
            help="config.json, a directory holding one (e.g. a downloaded hub snapshot), "
            "or a preset.",
        ),
        to: Optional[str] = typer.Option(
            None, "--to", help="Unique layers after merging, e.g. 6L."
        ),
        loops: int = typer.Option(1, "--loops", help="Core loops after merging."),
        prelude: Optional[int] = typer.Option(None, help="Layers before the core (default 1)."),
        coda: Optional[int] = typer.Option(None, help="Layers after the core (default 1)."),
        layout: Optional[str] = typer.Option(None, help="Prelude,core,coda at once, e.g. 1,4,1."),
        quant: Optional[str] = typer.Option(
            None, "--quant", help="Show one format: fp32, bf16, 8-bit or nvfp4 (default: all)."
        ),
        context: int = typer.Option(4096, help="Tokens of KV cache to size."),
        as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
    ):
        """Plan a compression without weights: e.g. cherry-mlx plan ./GLM-5 --to 6L --loops 8
        --quant nvfp4."""
        import json
        from dataclasses import asdict

        from cherry_mlx.compression.plan import format_plan, load_plan_config
        from cherry_mlx.compression.plan import plan as make_plan
        from cherry_mlx.models.info import FORMATS

        if quant is not None and quant not in FORMATS:
            raise ValueError(f"--quant {quant!r}: choose one of {', '.join(FORMATS)}")
        if layout is not None and (prelude is not None or coda is not None):
            raise ValueError("give --layout P,C,Q or --prelude/--coda, not both")
        if layout is not None and to is None:
            to = f"{sum(int(x) for x in layout.split(','))}L"
        rows = make_plan(
            load_plan_config(config),
            to=to,
            loops=loops,
            prelude=1 if prelude is None else prelude,
            coda=1 if coda is None else coda,
            layout=layout,
            context=context,
        )
        if as_json:
            typer.echo(json.dumps([asdict(r) for r in rows], indent=2))
        else:
            typer.echo(format_plan(rows, quant, context))
