"""``cherry-mlx teacher build``: cache a source model's top-k logits (and hidden states) once,
for distillation-based healing (``compress --heal-with distill``), MTP heads and quantisation."""

from __future__ import annotations

import typer
from cherry_mlx_cli.options import command, group

from cherry_mlx.training.teacher_config import TeacherConfig


def register(app: typer.Typer) -> None:
    teacher = group(app, "teacher", "Teacher cache: the source model's own signal, stored once.")
    command(teacher, "build", TeacherConfig, "cherry_mlx.training.teacher:teacher_command")
