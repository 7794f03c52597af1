"""Model families: which of mlx-lm's transformer blocks a ``model_type`` is built from.

The backbone (embedding, blocks called in ``schedule`` order, final norm, tied or separate LM
head), the looped core and the MTP heads are the same for every family; only the block (and for
Gemma the norm and the embedding scale) differs, and each is mlx-lm's own, so weight names match
the Hugging Face checkpoints:

- ``llama`` / ``mistral``: mlx-lm's Llama block (``attention_bias``/``mlp_bias`` flags, Llama 3
  and linear/dynamic/YaRN RoPE scaling through ``rope_scaling``).
- ``qwen2``: biases on q/k/v (none on o).
- ``qwen3``: a per-head RMSNorm on queries and keys before RoPE, explicit ``head_dim``.
- ``phi3``: fused ``qkv_proj`` and ``gate_up_proj``; partial rotary, linear/longrope scaling.
- ``gemma3_text``: four norms per block with ``1 + weight``, GELU MLP, q/k norms, embeddings
  scaled by sqrt(hidden), and two kinds of layers (``layer_types``): ``sliding_attention``
  (a ``sliding_window`` of keys, local RoPE base) and ``full_attention`` (global).
- ``gemma2``: Gemma's norms and embedding scale, attention scores and final logits soft-capped
  (``attn_logit_softcapping``, ``final_logit_softcapping``), every other layer sliding.

Heterogeneous layers: every layer keeps its own attention type wherever it is called from, so a
looped core keeps each position's type on every loop; a layer merged from several is global if
any of them was (``merged_layer_types``), since a global layer sees everything a sliding one does.
Mistral's and Phi-3's ``sliding_window`` (when set) applies to every layer, as in transformers.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import mlx.nn as nn
from mlx_lm.models import gemma2 as mlx_gemma2
from mlx_lm.models import gemma3_text as mlx_gemma3
from mlx_lm.models import llama as mlx_llama
from mlx_lm.models import phi3 as mlx_phi3
from mlx_lm.models import qwen2 as mlx_qwen2
from mlx_lm.models import qwen3 as mlx_qwen3

BLOCKS = {
    "llama": mlx_llama.TransformerBlock,
    "mistral": mlx_llama.TransformerBlock,
    "qwen2": mlx_qwen2.TransformerBlock,
    "qwen3": mlx_qwen3.TransformerBlock,
    "phi3": mlx_phi3.TransformerBlock,
    "gemma3_text": mlx_gemma3.TransformerBlock,
    "gemma2": mlx_gemma2.TransformerBlock,
}
SUPPORTED = tuple(BLOCKS)
GEMMA = ("gemma3_text", "gemma2")  # 1 + weight norms, scaled embeddings, sliding layers
ARRAY_MASK = ("gemma2",)  # mlx-lm's Gemma 2 block soft-caps scores itself: it needs mask arrays
SLIDING_PERIOD = {"gemma3_text": 6, "gemma2": 2}  # default: every k-th layer global
SLIDING, GLOBAL = "sliding_attention", "full_attention"
WINDOWED = ("mistral", "phi3")  # one ``sliding_window`` for every layer, when the config sets it


def check_family(model_type: str) -> None:
    if model_type not in BLOCKS:
        raise ValueError(
            f"model_type {model_type!r} is not supported; cherry-mlx supports "
            f"{', '.join(SUPPORTED)} (convert or choose a model of one of those families)"
        )


def normalise_args(args) -> None:
    """Fill the fields mlx-lm's blocks read from a config of any supported family (in place).

    transformers >= 5 writes ``rope_theta`` and the scaling inside ``rope_parameters`` (for Gemma 3
    one entry per layer type); mlx-lm's blocks read the older top-level fields, so copy them up.
    """
    check_family(args.model_type)
    params = args.rope_parameters or {}
    if GLOBAL in params:  # per layer type: global RoPE on top, the local base beside it
        local = params.get(SLIDING, {}).get("rope_theta")
        args.rope_local_base_freq = float(local) if local else args.rope_local_base_freq
        params = params[GLOBAL]
    if "rope_theta" in params:
        args.rope_theta = float(params["rope_theta"])
    if "partial_rotary_factor" in params:
        args.partial_rotary_factor = float(params["partial_rotary_factor"])
    kind = params.get("rope_type", params.get("type", "default"))
    if kind != "default" and args.rope_scaling is None:
        args.rope_scaling = {k: v for k, v in params.items() if k != "rope_theta"}
        if args.model_type == "phi3":
            args.rope_scaling.setdefault("type", kind)
    if args.head_dim is None:  # qwen3's block needs it explicitly
        args.head_dim = args.hidden_size // args.num_attention_heads
    if args.model_type == "phi3":
        args.partial_rotary_factor = args.partial_rotary_factor or 1.0
        args.original_max_position_embeddings = args.original_max_position_embeddings or 4096
    if args.model_type in GEMMA:
        args.query_pre_attn_scalar = args.query_pre_attn_scalar or args.head_dim
        args.sliding_window = args.sliding_window or (512 if args.model_type != "gemma2" else 4096)
        args.sliding_window_pattern = args.sliding_window_pattern or SLIDING_PERIOD[args.model_type]
        args.rope_local_base_freq = args.rope_local_base_freq or 10000.0


def default_layer_types(args) -> None:
    """Gemma configs without ``layer_types``: every ``sliding_window_pattern``-th layer is
    global, the others sliding; Mistral and Phi-3 with a ``sliding_window``: every layer sliding
    (both before the Llama default of all-global applies)."""
    if args.model_type in WINDOWED and args.layer_types is None and args.sliding_window:
        args.layer_types = [SLIDING] * args.num_hidden_layers
    if args.model_type in GEMMA and args.layer_types is None:
        k = args.sliding_window_pattern or SLIDING_PERIOD[args.model_type]
        n = args.num_hidden_layers
        args.layer_types = [GLOBAL if (i + 1) % k == 0 else SLIDING for i in range(n)]


def make_block(args, layer_type: Optional[str] = None):
    """One transformer block of the args' family (mlx-lm's module, HF weight names);
    ``layer_type`` chooses sliding or global attention where the family has both."""
    if args.model_type == "gemma3_text":
        # mlx-lm's Gemma 3 block takes its kind from its index in the 6-periodic pattern
        sliding = (layer_type or GLOBAL) == SLIDING
        return mlx_gemma3.TransformerBlock(args, 0 if sliding else args.sliding_window_pattern - 1)
    return BLOCKS[args.model_type](args)


def make_norm(args) -> nn.Module:
    """The final norm of the family (Gemma scales by ``1 + weight``)."""
    if args.model_type in GEMMA:
        return mlx_gemma3.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
    return nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)


def embed_scale(args) -> Optional[float]:
    """Gemma multiplies token embeddings by sqrt(hidden) (in the weights' dtype)."""
    return args.hidden_size**0.5 if args.model_type in GEMMA else None


def merged_layer_types(config: Dict[str, Any], sources: Sequence[Sequence[int]]) -> Dict[str, Any]:
    """``config`` for a model whose layer j is built from source layers ``sources[j]``: its
    ``layer_types`` (global if any source is global) or none for a homogeneous family."""
    cfg = dict(config)
    types: Optional[List[str]] = config.get("layer_types")
    cfg.pop("layer_types", None)
    if config.get("model_type") in GEMMA and types:
        cfg["layer_types"] = [
            GLOBAL if any(types[i] == GLOBAL for i in group) else SLIDING for group in sources
        ]
    return cfg
