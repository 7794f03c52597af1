"""``cherry-mlx fuse`` (assemble compressed experts into a MoEE, train its router),
``cherry-mlx distill`` (SGT distillation from a frozen teacher, Eq. 11) and
``cherry-mlx cabstractor train`` (the fusion encoder over frozen feature streams).

"fuse" here is the paper's expert fusion, not mlx-lm's ``fuse`` (which folds LoRA adapters).
"""

from __future__ import annotations

import typer
from cherry_mlx_cli.options import command, group

from cherry_mlx.fusion.config import CabTrainConfig, DistillConfig, FuseConfig


def register(app: typer.Typer) -> None:
    command(app, "fuse", FuseConfig, "cherry_mlx.fusion.run:fuse_command")
    command(app, "distill", DistillConfig, "cherry_mlx.fusion.distill:distill_command")
    cabstractor = group(
        app,
        "cabstractor",
        "Cabstractor fusion encoder: learned queries over frozen feature streams.",
    )
    command(cabstractor, "train", CabTrainConfig, "cherry_mlx.fusion.cabstractor_train:run")
