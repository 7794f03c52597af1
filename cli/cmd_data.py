"""``cherry-mlx data build``: write the bundled default data set and prose corpora."""

from __future__ import annotations

from typing import Optional

import typer

data_app = typer.Typer(
    help="Bundled data: build the default data set and prose corpora.", no_args_is_help=True
)


@data_app.command("build")
def build_cmd(
    out: Optional[str] = typer.Option(
        None, "--out", "-o", help="output folder (default: weights/data in the checkout)"
    ),
    seed: int = typer.Option(
        0, min=0, help="seed of every random choice (same seed -> same bytes)"
    ),
    scale: float = typer.Option(1.0, help="multiplies every family's example count"),
    prose: bool = typer.Option(True, help="also write prose/{ko,en}*.jsonl"),
    tokenizer: Optional[str] = typer.Option(
        None, help="tokenizer.json for the GT share in tokens (default: cherry-tiny's)"
    ),
) -> None:
    """Generate KO/EN instruction data with GT spans known by construction, split by question."""
    from cherry_mlx.data.build import BuildConfig, build

    cfg = BuildConfig(seed=seed, scale=scale, prose=prose, tokenizer=tokenizer)
    if out:
        cfg.out_dir = out
    build(cfg)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
