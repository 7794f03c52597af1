"""Check a config dictionary before ``plan`` counts it.

``plan`` is arithmetic on the numbers of a config.json a user hands in (often downloaded, sometimes
hand-edited), so every field it reads is checked first: a whole number in range, the shapes
consistent (heads divide the hidden size, top-k within the experts, a dense MLP size where dense
layers exist). A config ``plan`` cannot count is a one-line error naming the file and the field,
never a Python exception or a table of impossible (negative, infinite) numbers.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

BIG = 2**31  # beyond any real dimension; keeps the counts finite when printed as floats
MAX_LAYERS = 100_000  # one loop iteration per layer: bounded so a typo cannot hang the command

REQUIRED = ("hidden_size", "num_hidden_layers", "vocab_size", "num_attention_heads")
SIZES = (  # positive when set (0 / null means "not set", as in Hugging Face configs)
    "num_key_value_heads", "head_dim", "intermediate_size", "moe_intermediate_size",
    "shared_expert_intermediate_size", "kv_lora_rank", "q_lora_rank", "qk_nope_head_dim",
    "qk_rope_head_dim", "v_head_dim", "index_n_heads", "index_head_dim",
)  # fmt: skip
COUNTS = (  # zero or more
    "n_routed_experts", "num_local_experts", "num_experts", "num_experts_per_tok",
    "n_shared_experts", "first_k_dense_replace", "moe_layer_freq", "decoder_sparse_step",
)  # fmt: skip
JSON_KINDS = {"list": "array", "NoneType": "null", "str": "string", "bool": "boolean",
              "int": "number", "float": "number"}  # fmt: skip
MLA = ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")


def _whole(where: str, key: str, value: Any, low: int, high: int = BIG) -> int:
    """``value`` as an int in [low, high], or a one-line error naming the file and the key."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        ok, value = True, int(value)
    if not ok:
        raise ValueError(f"{where}: {key} is {value!r}, expected a whole number")
    if value < low:
        raise ValueError(f"{where}: {key} is {value}, expected at least {low}")
    if value > high:
        raise ValueError(f"{where}: {key} is {value}, expected at most {high}")
    return value


def _get(c: Dict[str, Any], where: str, key: str, low: int, high: int = BIG) -> Optional[int]:
    value = c.get(key)
    return None if value is None else _whole(where, key, value, low, high)


def check_plan_config(config: Any, where: str = "config") -> Dict[str, Any]:
    """The language-model part of ``config`` (``text_config`` when nested), checked; raises a
    one-line ``ValueError`` naming ``where`` (the file) and the first bad field."""
    if not isinstance(config, dict):
        kind = JSON_KINDS.get(type(config).__name__, type(config).__name__)
        raise ValueError(f"{where}: holds a JSON {kind}, expected an object (a config.json)")
    text = config.get("text_config")
    if text is not None and not isinstance(text, dict):
        raise ValueError(f"{where}: text_config is a {type(text).__name__}, expected an object")
    c = text or config
    missing = [k for k in REQUIRED if c.get(k) is None]
    if missing:
        raise ValueError(f"{where}: no {', '.join(missing)}: not a transformer LM config.json")
    d = _get(c, where, "hidden_size", 1)
    n = _get(c, where, "num_hidden_layers", 1, MAX_LAYERS)
    _get(c, where, "vocab_size", 1)
    heads = _get(c, where, "num_attention_heads", 1)
    sizes = {k: _get(c, where, k, 0) for k in SIZES}
    counts = {k: _get(c, where, k, 0) for k in COUNTS}
    kv = sizes["num_key_value_heads"]
    if kv and heads % kv:
        raise ValueError(f"{where}: num_attention_heads {heads} is not a multiple of "
                         f"num_key_value_heads {kv}")  # fmt: skip
    if not sizes["kv_lora_rank"] and not sizes["head_dim"] and d % heads:
        raise ValueError(f"{where}: hidden_size {d} is not divisible by num_attention_heads "
                         f"{heads}; set head_dim or fix the sizes")  # fmt: skip
    if sizes["kv_lora_rank"]:
        lacking = [k for k in MLA if not sizes[k]]
        if lacking:
            raise ValueError(f"{where}: kv_lora_rank (latent attention) needs {', '.join(lacking)}")
    if sizes["index_n_heads"] and not sizes["index_head_dim"]:
        raise ValueError(f"{where}: index_n_heads needs index_head_dim")
    experts = counts["n_routed_experts"] or counts["num_local_experts"] or counts["num_experts"]
    dense_only = c.get("mlp_only_layers")
    if dense_only is not None and not (
        isinstance(dense_only, list)
        and all(isinstance(i, int) and not isinstance(i, bool) for i in dense_only)
    ):
        raise ValueError(f"{where}: mlp_only_layers is {dense_only!r}, expected a list of layers")
    if experts:
        k = counts["num_experts_per_tok"] or 1
        if k > experts:
            raise ValueError(f"{where}: num_experts_per_tok {k} is more than the {experts} experts")
        if not (sizes["moe_intermediate_size"] or sizes["intermediate_size"]):
            raise ValueError(f"{where}: experts need moe_intermediate_size or intermediate_size")
    step = counts["moe_layer_freq"] or counts["decoder_sparse_step"] or 1
    has_dense = not experts or counts["first_k_dense_replace"] or dense_only or step > 1
    if has_dense and not sizes["intermediate_size"]:
        raise ValueError(f"{where}: no intermediate_size for its dense MLP layers")
    _check_recurrence(c.get("recurrence"), where, n)
    return c


def _check_recurrence(r: Any, where: str, n: int) -> None:
    """A looped cherry model's split must describe its own layers."""
    if not r:
        return
    if not isinstance(r, dict):
        raise ValueError(f"{where}: recurrence is {r!r}, expected prelude/core/coda/loops")
    parts = {k: _whole(where, f"recurrence.{k}", r.get(k), 0) for k in ("prelude", "core", "coda")}
    _whole(where, "recurrence.loops", r.get("loops"), 1)
    if sum(parts.values()) != n:
        raise ValueError(f"{where}: recurrence prelude+core+coda = {sum(parts.values())}, but "
                         f"num_hidden_layers is {n}")  # fmt: skip
