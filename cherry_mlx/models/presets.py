"""Where presets live and which one is the default (no MLX: the CLI reads these for --help)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
WEIGHTS_DIR = Path(os.environ.get("CHERRY_MLX_WEIGHTS", REPO_ROOT / "weights"))
DEFAULT_PRESET = "cherry-tiny"  # the embedded default: trained by `cherry-mlx train` alone


def list_presets() -> list[str]:
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / "config.json").is_file())
