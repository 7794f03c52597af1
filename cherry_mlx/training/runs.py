"""Run directories: ``runs/NAME/`` with step checkpoints; later commands default to the latest."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

RUNS_DIR = Path(os.environ.get("CHERRY_MLX_RUNS", "runs"))


def resolve_run_checkpoint(run_dir: Path) -> Optional[Path]:
    """The model directory a run stands for: its ``best`` checkpoint, else its latest step."""
    run_dir = Path(run_dir)
    best = run_dir / "best"
    if (best / "config.json").is_file():
        return best
    steps = sorted(
        (p for p in (run_dir / "checkpoints").glob("step-*") if (p / "config.json").is_file()),
        key=lambda p: int(p.name.split("-")[1]),
    )
    return steps[-1] if steps else None


def latest_run(runs_dir: Path = RUNS_DIR) -> Optional[Path]:
    """Most recently modified run directory, for commands called without a model."""
    if not runs_dir.is_dir():
        return None
    runs = [p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None
