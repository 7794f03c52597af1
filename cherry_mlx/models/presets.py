"""Where presets live and which one is the default (no MLX: the CLI reads these for --help)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# an empty CHERRY_MLX_WEIGHTS means unset (Path("") would make every folder of the cwd a preset)
WEIGHTS_DIR = Path(os.environ.get("CHERRY_MLX_WEIGHTS") or REPO_ROOT / "weights")
# The embedded default, trained by `cherry-mlx train` alone: 48 layers deep like the paper's
# backbone (so `compress --to 6L --loops 8` is its 48 -> 6 pipeline), narrow enough for minutes.
DEFAULT_PRESET = "cherry-48l"
# The shallow preset the fast paths use (`repro --budget tiny`, tests): 8 layers, same tokenizer.
TINY_PRESET = "cherry-tiny"


def list_presets() -> list[str]:
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / "config.json").is_file())


def presets_hint() -> str:
    """The known presets, or why there are none (a CHERRY_MLX_WEIGHTS pointing nowhere)."""
    names = list_presets()
    if names:
        return f"known presets are {', '.join(names)}"
    where = (
        f"CHERRY_MLX_WEIGHTS={os.environ['CHERRY_MLX_WEIGHTS']}"
        if os.environ.get("CHERRY_MLX_WEIGHTS")
        else str(WEIGHTS_DIR)
    )
    state = "does not exist" if not WEIGHTS_DIR.is_dir() else "holds no preset (no */config.json)"
    return f"no presets are known: {where} {state}; unset it or point it at a weights folder"
