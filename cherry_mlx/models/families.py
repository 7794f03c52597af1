"""Model families: which of mlx-lm's transformer blocks a ``model_type`` is built from.

The backbone (embedding, blocks called in ``schedule`` order, final norm, tied or separate LM
head), the looped core and the MTP heads are the same for every family; only the block differs,
and each is mlx-lm's own, so weight names match the Hugging Face checkpoints:

- ``llama`` / ``mistral``: mlx-lm's Llama block (``attention_bias``/``mlp_bias`` flags, Llama 3
  and linear/dynamic/YaRN RoPE scaling through ``rope_scaling``).
- ``qwen2``: biases on q/k/v (none on o).
- ``qwen3``: a per-head RMSNorm on queries and keys before RoPE, explicit ``head_dim``.

Mistral's sliding window is not applied: contexts up to the window (4096 tokens) are exact.
"""

from __future__ import annotations

from mlx_lm.models import llama as mlx_llama
from mlx_lm.models import qwen2 as mlx_qwen2
from mlx_lm.models import qwen3 as mlx_qwen3

BLOCKS = {
    "llama": mlx_llama.TransformerBlock,
    "mistral": mlx_llama.TransformerBlock,
    "qwen2": mlx_qwen2.TransformerBlock,
    "qwen3": mlx_qwen3.TransformerBlock,
}
SUPPORTED = tuple(BLOCKS)


def check_family(model_type: str) -> None:
    if model_type not in BLOCKS:
        raise ValueError(
            f"model_type {model_type!r} is not supported; cherry-mlx supports "
            f"{', '.join(SUPPORTED)} (convert or choose a model of one of those families)"
        )


def normalise_args(args) -> None:
    """Fill the fields mlx-lm's blocks read from a config of any supported family (in place).

    transformers >= 5 writes ``rope_theta`` and the scaling inside ``rope_parameters``; mlx-lm's
    Llama block reads the older top-level ``rope_theta``/``rope_scaling``, so copy them up.
    """
    check_family(args.model_type)
    params = args.rope_parameters or {}
    if "rope_theta" in params:
        args.rope_theta = float(params["rope_theta"])
    kind = params.get("rope_type", params.get("type", "default"))
    if kind != "default" and args.rope_scaling is None:
        args.rope_scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    if args.head_dim is None:  # qwen3's block needs it explicitly
        args.head_dim = args.hidden_size // args.num_attention_heads


def make_block(args):
    """One transformer block of the args' family (mlx-lm's module, HF weight names)."""
    return BLOCKS[args.model_type](args)
