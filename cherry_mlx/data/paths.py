"""Where the bundled data lives, and a clear error when it has not been built yet."""

from __future__ import annotations

import os

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# CHERRY_MLX_WEIGHTS moves the presets and the bundled data together (as models.presets reads it)
WEIGHTS_ROOT = os.environ.get("CHERRY_MLX_WEIGHTS") or os.path.join(_ROOT, "weights")
DATA_ROOT = os.path.join(WEIGHTS_ROOT, "data")
DEFAULT_DATA_DIR = os.path.join(DATA_ROOT, "default")
PROSE_DIR = os.path.join(DATA_ROOT, "prose")
SPLITS = ("train", "valid", "test")


def _require(path: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} not found: run `cherry-mlx data build` to write the bundled data set"
        )
    return path


def default_data_paths(data_dir: str | None = None) -> dict:
    """``{"train", "valid", "test"}`` -> JSONL path of the default (or given) data directory."""
    data_dir = data_dir or DEFAULT_DATA_DIR
    return {s: _require(os.path.join(data_dir, f"{s}.jsonl")) for s in SPLITS}


def prose_paths(lang: str, prose_dir: str | None = None) -> dict:
    """``{"train", "valid"}`` -> JSONL path of the ``{"text"}`` prose corpus for ``lang``."""
    if lang not in ("ko", "en"):
        raise ValueError(f"prose language {lang!r} unknown: use 'ko' or 'en'")
    prose_dir = prose_dir or PROSE_DIR
    return {
        "train": _require(os.path.join(prose_dir, f"{lang}.jsonl")),
        "valid": _require(os.path.join(prose_dir, f"{lang}.valid.jsonl")),
    }


def ssgt_prompts_path(data_dir: str | None = None) -> str:
    """Held-out prompts for the SSGT rate metrics (Atcha, Jamkkan, guardrail, false refusal)."""
    return _require(os.path.join(data_dir or DEFAULT_DATA_DIR, "ssgt_prompts.jsonl"))
