"""Run directories: ``runs/NAME/`` with step checkpoints; later commands default to the latest."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

RUNS_DIR = Path(os.environ.get("CHERRY_MLX_RUNS", "runs"))


def resolve_run_checkpoint(run_dir: Path) -> Optional[Path]:
    """The model directory a run stands for: its ``best`` checkpoint, else the ``model/`` that
    compress/fuse write, else its latest step."""
    run_dir = Path(run_dir)
    for sub in ("best", "model"):
        if (run_dir / sub / "config.json").is_file():
            return run_dir / sub
    steps = sorted(
        (p for p in (run_dir / "checkpoints").glob("step-*") if (p / "config.json").is_file()),
        key=lambda p: int(p.name.split("-")[1]),
    )
    return steps[-1] if steps else None


def latest_run(runs_dir: Path = RUNS_DIR, require_model: bool = False) -> Optional[Path]:
    """Most recently modified run directory, for commands called without a model.

    ``require_model`` skips directories that hold no loadable model yet (a run killed before its
    first checkpoint, an experiment folder of several runs): what commands that load a model want.
    """
    if not runs_dir.is_dir():
        return None
    runs = [p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if require_model:
        runs = [
            p
            for p in runs
            if (p / "config.json").is_file() or resolve_run_checkpoint(p) is not None
        ]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None
