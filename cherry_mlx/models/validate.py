"""Checks on a model's ``config.json`` and weights before anything is built or trained.

A config that is a list, empty or partial would otherwise build a default model and then list
dozens of "parameters not in model"; a quoted number, a zero-layer stack, an odd head dimension
(RoPE rotates pairs) or a NaN ``rope_theta`` fail deep inside MLX or, worse, produce garbage with
exit 0. Each is one ``ValueError`` line naming the file, the key and the fix.
"""

from __future__ import annotations

import math
from typing import Any, Dict

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from cherry_mlx.models.llama import Model, ModelArgs

REQUIRED = (
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "num_attention_heads",
    "vocab_size",
)
COUNTS = REQUIRED + ("num_key_value_heads", "head_dim", "max_position_embeddings")
POSITIVE_FLOATS = ("rope_theta", "rms_norm_eps")


def check_model_config(config: Any, source: str = "config.json") -> Dict[str, Any]:
    """Return ``config`` when it describes a buildable Llama-family model, else raise one line."""
    if not isinstance(config, dict):
        raise ValueError(
            f"{source} holds a JSON {type(config).__name__}, not an object of model settings; "
            "restore the model's config.json"
        )
    missing = [k for k in REQUIRED if k not in config]
    if missing and not config.get("moee"):
        what = "is empty" if not config else f"lacks {', '.join(missing)}"
        raise ValueError(
            f"{source} {what}: a model config needs {', '.join(REQUIRED)}; "
            "restore the model's config.json or start from a preset's"
        )
    for key in COUNTS:
        value = config.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(
                f"{source}: {key} is {value!r}, not an integer; write it as a number without quotes"
            )
        # a whole-model MoEE keeps its layers in its experts: its own stack may be empty
        if value < (0 if key == "num_hidden_layers" and config.get("moee") else 1):
            raise ValueError(f"{source}: {key} is {value}; it must be at least 1")
    for key in POSITIVE_FLOATS:
        value = config.get(key)
        if value is None:
            continue
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{source}: {key} is {value!r}; it must be a finite number > 0")
    if "hidden_size" in config and "num_attention_heads" in config:
        heads = config["num_attention_heads"]
        head_dim = config.get("head_dim")
        if head_dim is None:
            if config["hidden_size"] % heads:
                raise ValueError(
                    f"{source}: hidden_size {config['hidden_size']} is not a multiple of "
                    f"num_attention_heads {heads}; change one of them or set head_dim"
                )
            head_dim = config["hidden_size"] // heads
        if head_dim % 2:
            raise ValueError(
                f"{source}: the attention head dimension is {head_dim}, but RoPE rotates pairs "
                "of dimensions so it must be even; change hidden_size/num_attention_heads or "
                "head_dim"
            )
        kv = config.get("num_key_value_heads") or heads
        if heads % kv:
            raise ValueError(
                f"{source}: num_attention_heads {heads} is not a multiple of "
                f"num_key_value_heads {kv}; make it one"
            )
    return config


def check_finite_weights(model: nn.Module, source: str) -> None:
    """Refuse weights holding NaN or infinity: they would only produce garbage text."""
    for name, w in tree_flatten(model.parameters()):
        if mx.issubdtype(w.dtype, mx.floating) and not mx.all(mx.isfinite(w)).item():
            raise ValueError(
                f"{source}: weight {name} holds NaN or infinite values; the model is damaged, "
                "use an earlier checkpoint or retrain it"
            )


def check_import(config: Dict[str, Any], shapes: Dict[str, tuple], source: str) -> None:
    """An imported model's tensors (name -> shape) are exactly those its config implies, with
    those shapes: a missing, extra or misshapen tensor (a damaged or mislabelled file) is refused
    before anything is written, not announced as ready and found broken at the first load."""
    check_model_config(config, source)
    model = Model(ModelArgs.from_dict(config))  # lazy: only shapes are read
    want = {k: v.shape for k, v in tree_flatten(model.parameters())}
    got = model.sanitize(dict(shapes))  # sanitize only drops names
    layers = config["num_hidden_layers"]
    missing = sorted(set(want) - set(got))
    if missing:
        raise ValueError(
            f"{source}: {len(missing)} tensors that its {layers}-layer config implies are "
            f"missing (first: {missing[0]}); the file is incomplete or its block_count is wrong"
        )
    extra = sorted(set(got) - set(want))
    if extra:
        raise ValueError(
            f"{source}: {len(extra)} tensors beyond its {layers}-layer config (first: "
            f"{extra[0]}); the file's block_count or architecture is wrong"
        )
    for name, shape in want.items():
        if tuple(got[name]) != tuple(shape):
            raise ValueError(
                f"{source}: tensor {name} has shape {tuple(got[name])}, but the config implies "
                f"{tuple(shape)}; the file is damaged or its metadata wrong"
            )


def check_finite_arrays(weights: Dict[str, mx.array], source: str) -> None:
    """``check_finite_weights`` for a name -> array dict (evaluated ones cost one pass)."""
    for name, w in weights.items():
        if mx.issubdtype(w.dtype, mx.floating) and not mx.all(mx.isfinite(w)).item():
            raise ValueError(
                f"{source}: tensor {name} holds NaN or infinite values; the file is damaged, "
                "download or export it again"
            )
