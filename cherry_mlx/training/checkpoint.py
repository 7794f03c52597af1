"""Step checkpoints: everything needed to continue a run exactly, written atomically.

``runs/NAME/checkpoints/step-N/`` holds
    model.safetensors, config.json, tokenizer files   a loadable model (cherry or mlx-lm); with LoRA
                                                       the adapters are fused into the weights
    adapters.safetensors                               LoRA only: the trainable adapter weights
    optimizer.safetensors                              AdamW moments, step and learning rate
    trainer_state.json                                 step, data-iterator position, RNG seed,
                                                       best eval so far
    train_config.json                                  the resolved TrainConfig
    meta.json                                          step, time, metrics (for humans and tools)
The directory is assembled under a hidden temporary name and renamed into place, so a kill never
leaves a half-written ``step-N``; stale temporaries are removed by the next save.
"""

from __future__ import annotations

import json
import shutil
import time
import types
from pathlib import Path
from typing import Any, Dict, Optional

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from cherry_mlx.models.loading import replace_dir, save_model
from cherry_mlx.models.runs import list_checkpoints


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, mx.array):
        return np.array(x).tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"cannot store {type(x).__name__} in a checkpoint")


def export_weights(model) -> Dict[str, mx.array]:
    """Flat weights of a plain model: LoRA layers fused (weight + scale·B·A), adapters dropped."""
    params = dict(tree_flatten(model.parameters()))
    for name, module in model.named_modules():
        if hasattr(module, "fuse") and hasattr(module, "lora_a"):
            for k in ("lora_a", "lora_b"):
                params.pop(f"{name}.{k}", None)
            for k in [p for p in params if p.startswith(f"{name}.linear.")]:
                params.pop(k)
            for k, v in tree_flatten(module.fuse().parameters()):
                params[f"{name}.{k}"] = v
    return params


def is_lora(model) -> bool:
    return any(hasattr(m, "lora_a") for _, m in model.named_modules())


def save_checkpoint(
    out_dir: Path,
    model,
    model_cfg: Dict[str, Any],
    optimizer,
    train_cfg,
    trainer_state: Dict[str, Any],
    meta: Optional[Dict[str, Any]] = None,
    tokenizer_dir: Optional[Path] = None,
) -> Path:
    """Write a full step checkpoint to ``out_dir`` atomically; returns ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(".*.partial"):
        shutil.rmtree(stale, ignore_errors=True)
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    weights = tree_unflatten(list(export_weights(model).items()))
    # save_model writes its own temporary dir and renames it to `partial`.
    save_model(types.SimpleNamespace(parameters=lambda: weights), partial, model_cfg, tokenizer_dir)
    try:
        if is_lora(model):
            adapters = dict(tree_flatten(model.trainable_parameters()))
            mx.save_safetensors(str(partial / "adapters.safetensors"), adapters)
        if optimizer is not None:
            mx.save_safetensors(
                str(partial / "optimizer.safetensors"), dict(tree_flatten(optimizer.state))
            )
        if train_cfg is not None:
            train_cfg.save(partial / "train_config.json")
        (partial / "trainer_state.json").write_text(
            json.dumps(trainer_state, indent=2, default=_jsonable) + "\n"
        )
        meta = dict(meta or {}, saved_at=time.strftime("%Y-%m-%dT%H:%M:%S"))
        (partial / "meta.json").write_text(json.dumps(meta, indent=2, default=_jsonable) + "\n")
        replace_dir(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out_dir


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def load_optimizer_state(optimizer, path: Path, params) -> None:
    """Restore AdamW moments/step; ``params`` initialises the state's structure first."""
    optimizer.init(params)
    optimizer.state = tree_unflatten(list(mx.load(str(path)).items()))


def load_trainer_state(ckpt: Path) -> Dict[str, Any]:
    return json.loads((Path(ckpt) / "trainer_state.json").read_text())
