"""``cherry-mlx cabstractor train``: fit the Cabstractor fusion encoder (paper Section 5.4) on
precomputed features of frozen extractors."""

from __future__ import annotations

from typing import Optional

import typer

cab_app = typer.Typer(
    help="Cabstractor fusion encoder: learned queries over frozen feature streams.",
    no_args_is_help=True,
)


@cab_app.command("train")
def train(
    features_dir: str = typer.Argument(
        ..., help="Dir with texts.jsonl and one <id>.npy or <id>.safetensors per example."
    ),
    model: str = typer.Option("cherry-tiny", help="The frozen LM (model dir, run or preset)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="Output dir (default runs/...)."),
    steps: int = typer.Option(300, help="Training steps."),
    batch_size: int = typer.Option(16, help="Examples per step."),
    learning_rate: float = typer.Option(1e-3, help="AdamW learning rate."),
    num_queries: int = typer.Option(81, help="Learned queries = soft tokens given to the LM."),
    num_layers: int = typer.Option(3, help="Cross-attention layers."),
    num_heads: int = typer.Option(8, help="Attention heads."),
    dims: int = typer.Option(0, help="Width (0: the LM's hidden size, at most 1024)."),
    valid_fraction: float = typer.Option(0.1, help="Share of examples held out for evaluation."),
    seed: int = typer.Option(0, min=0, help="Seed of initialisation and data order."),
    force: bool = typer.Option(
        False, "--force", help="Write into a non-empty -o, replacing only the cabstractor files."
    ),
):
    """Train the Cabstractor so the frozen LM says each example's text after the soft tokens."""
    opts = dict(locals())  # exactly the options above, one field of CabTrainConfig each
    from cherry_mlx.fusion.cabstractor_train import CabTrainConfig, run

    run(CabTrainConfig(**opts), log=typer.echo)


def register(app: typer.Typer) -> None:
    app.add_typer(cab_app, name="cabstractor")
