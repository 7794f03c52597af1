"""Per-tensor scales for NVFP4 (the paper's Tables 8 and 15), folded into neighbouring weights.

NVFP4 stores E2M1 values in blocks of 16 with one FP8 E4M3 scale per block; a block's scale is
amax/6. E4M3 has 3 mantissa bits down to 2^-6 and subnormals down to 2^-9, so a block whose amax is
below ~6·2^-9 ≈ 0.012 rounds to a coarse or zero scale and its weights collapse (our test: a
tensor with amax 0.002 dequantises to exactly 0). NVIDIA's format adds an FP32 scale per tensor
that maps the tensor's largest block scale to E4M3's top (448). MLX 0.32's ``mx.quantize`` accepts
``global_scale``, but ``nn.QuantizedLinear``/``QuantizedEmbedding`` and ``mx.quantized_matmul`` do
not carry it (mlx-lm uses it for switch/expert layers only), and a checkpoint with extra
``global_scale`` arrays would not load as a plain Llama in mlx-lm.

The fold: multiply each matrix by a power of two s (exact in floating point) before quantising and
undo the factor where the model is linear, so no extra parameter or layer type is needed:

    norm g -> q, k, v (gate, up):   g' = g / s1, W' = W · s1          (the norm is linear in g)
    v -> o (up -> down):            W_v' = W_v · s1 / s2, W_o' = W_o · s2
                                    (attention is linear in V; SwiGLU is linear in the up branch)
    final norm -> untied lm_head:      g' = g / s,  W' = W · s   (only without MTP heads: their
                                       hnorm reads that output, and its eps would then matter)
    MTP head norms -> proj:            hnorm', enorm' = · / s,  proj' = proj · s

Every factor is chosen ≤ its tensor's target 2^floor(log2(448·6 / amax)) so nothing saturates;
s2 splits the v·o product so both get the same share of their targets. Norms stay in full
precision (MLX quantises matrices only) and absorb any factor. Layers of unknown structure are
left unfolded, and ``quant_error`` reports their error so a collapse is visible.

The embedding (tied or not) feeds the residual stream, so its scale s_e scales the whole stream:

    embed' = embed · s_e,  o' = o · s_e,  down' = down · s_e   (every residual write, by s_e)
    every RMSNorm reading the stream: eps' = eps · s_e²       (RMSNorm(s·x; eps·s²) = RMSNorm(x))
    tied LM head (the same matrix): final norm g' = g / s_e

``rms_norm_eps`` is one config field, so this needs every norm to read the stream: plain models
without MTP heads (whose hnorm reads the final norm's output) and weights of at least float32's
or bfloat16's range (float16 would overflow on a stream scaled by s_e).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import mlx.core as mx

from cherry_mlx.models.llama import Model

E4M3_MAX = 448.0
E2M1_MAX = 6.0


def target_scale(w: mx.array) -> float:
    """Largest power of two s with amax(w)·s/6 <= 448 (the tensor's largest block scale at E4M3's
    top)."""
    amax = mx.abs(w).max().item()
    if amax == 0 or not math.isfinite(amax):
        return 1.0
    return 2.0 ** math.floor(math.log2(E4M3_MAX * E2M1_MAX / amax))


def _pow2(x: float) -> float:
    return 2.0 ** round(math.log2(x))


def _scale_linear(lin, factor: float, bias_factor: float = 1.0) -> None:
    lin.weight = lin.weight * factor
    if "bias" in lin and bias_factor != 1.0:
        lin.bias = lin.bias * bias_factor


def _split(s_in: float, t_mid: float, t_out: float):
    """For a chain (norm/s_in) -> mid -> out: mid gets s_in/s2, out gets s2; balance both shares
    of their targets, keep both ≤ target."""
    s2 = _pow2(math.sqrt(s_in * t_out / t_mid))
    s2 = min(max(s2, s_in / t_mid), t_out)
    return s_in / s2, s2


def fold_block(block) -> Dict[str, float]:
    """Fold tensor scales into one Llama ``TransformerBlock`` (in place); returns the factors."""
    attn, mlp = block.self_attn, block.mlp
    tq, tk, tv, to = (
        target_scale(getattr(attn, n).weight) for n in ("q_proj", "k_proj", "v_proj", "o_proj")
    )
    s1 = min(tq, tk, tv * to)
    fv, fo = _split(s1, tv, to)
    block.input_layernorm.weight = block.input_layernorm.weight / s1
    _scale_linear(attn.q_proj, s1)
    _scale_linear(attn.k_proj, s1)
    _scale_linear(attn.v_proj, fv, 1.0 / fo)
    _scale_linear(attn.o_proj, fo)
    tg, tu, td = (
        target_scale(getattr(mlp, n).weight) for n in ("gate_proj", "up_proj", "down_proj")
    )
    s3 = min(tg, tu * td)
    fu, fd = _split(s3, tu, td)
    block.post_attention_layernorm.weight = block.post_attention_layernorm.weight / s3
    _scale_linear(mlp.gate_proj, s3)
    _scale_linear(mlp.up_proj, fu, 1.0 / fd)
    _scale_linear(mlp.down_proj, fd)
    return {"q": s1, "k": s1, "v": fv, "o": fo, "gate": s3, "up": fu, "down": fd}


def is_post_norm_block(m) -> bool:
    """A Gemma 2/3 block, left unfolded: its norms scale by ``1 + weight``, so a pre-norm could
    absorb a factor s only as ``(1 + w)/s - 1`` (float32 then loses the gain's low bits), and
    a factor pushed through a post-norm (attention and MLP outputs are normalised before the
    residual add) shifts that norm's eps: on gemma-3-270m such a fold moved logits by up to 8.
    Gemma's weights (amax 0.3-1 there) keep normal E4M3 block scales without it."""
    return hasattr(m, "post_feedforward_layernorm")


def is_llama_block(m) -> bool:
    """A pre-norm block with plain-gain norms, q/k/v/o and gate/up/down (not Gemma's)."""
    if is_post_norm_block(m):
        return False
    try:
        return (
            all(hasattr(m, n) for n in ("input_layernorm", "post_attention_layernorm"))
            and all(hasattr(m.self_attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
            and all(hasattr(m.mlp, n) for n in ("gate_proj", "up_proj", "down_proj"))
        )
    except AttributeError:
        return False


def residual_foldable(model) -> bool:
    """Can the embedding's scale be folded through the residual stream (see the module doc)?"""
    return (
        isinstance(model, Model)
        and getattr(model, "mtp", None) is None
        and all(is_llama_block(layer) for layer in model.layers)
        and model.model.embed_tokens.weight.dtype in (mx.float32, mx.bfloat16)
    )


def fold_embedding_scale(model, config: Dict[str, Any], skip: List[str] = ()) -> Optional[float]:
    """Scale the residual stream by s_e so the embedding (and a tied LM head) reaches its NVFP4
    target; updates ``config['rms_norm_eps']`` in place. Returns s_e, or None when not foldable.

    s_e is capped so no block loses headroom: o and down absorb s_e, which the v·o and up·down
    chains must still fit below their targets next to q/k's and gate's own factor."""
    if not residual_foldable(model):
        return None
    s_e = target_scale(model.model.embed_tokens.weight)
    for i, layer in enumerate(model.layers):
        if any(f"model.layers.{i}".startswith(s) for s in skip):
            continue
        a, m = layer.self_attn, layer.mlp
        tq, tk, tv, to = (
            target_scale(getattr(a, n).weight) for n in ("q_proj", "k_proj", "v_proj", "o_proj")
        )
        tg, tu, td = (
            target_scale(getattr(m, n).weight) for n in ("gate_proj", "up_proj", "down_proj")
        )
        s_e = min(s_e, tv * to / min(tq, tk), tu * td / tg)
    if s_e <= 1.0:
        return None
    model.model.embed_tokens.weight = model.model.embed_tokens.weight * s_e
    for layer in model.layers:
        _scale_linear(layer.self_attn.o_proj, s_e, s_e)
        _scale_linear(layer.mlp.down_proj, s_e, s_e)
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm.eps = norm.eps * s_e**2
    final = model.model.norm
    final.eps = final.eps * s_e**2
    if model.args.tie_word_embeddings:
        final.weight = final.weight / s_e
    eps = config.get("rms_norm_eps", model.args.rms_norm_eps)
    config["rms_norm_eps"] = eps * s_e**2
    model.args.rms_norm_eps = config["rms_norm_eps"]
    return s_e


def fold_tensor_scales(
    model, skip: List[str] = (), config: Optional[Dict[str, Any]] = None
) -> Dict[str, Dict[str, float]]:
    """Fold NVFP4 tensor scales into every foldable layer of a cherry/Llama model (in place).
    ``skip``: path prefixes left untouched (layers kept in full precision gain nothing).
    ``config``: given, the embedding's scale is folded through the residual stream too (its
    ``rms_norm_eps`` is updated), unless the embedding is skipped."""
    folded: Dict[str, Dict[str, float]] = {}

    def skipped(path):
        return any(path.startswith(s) for s in skip)

    if config is not None and not skipped("model.embed_tokens"):
        s_e = fold_embedding_scale(model, config, skip)
        if s_e is not None:
            folded["model.embed_tokens"] = {"embed": s_e}

    for i, layer in enumerate(model.layers):
        if is_llama_block(layer) and not skipped(f"model.layers.{i}"):
            folded[f"model.layers.{i}"] = fold_block(layer)
    mtp = getattr(model, "mtp", None)
    # The final norm's output also feeds the MTP heads' hnorm, whose eps would no longer be
    # negligible on an input divided by s: with heads, lm_head stays unfolded.

    # its final norm feeds only the LM head (and is a plain gain: not Gemma's 1 + weight)
    plain = isinstance(model, Model) and not any(is_post_norm_block(b) for b in model.layers)
    if plain and "lm_head" in model and mtp is None and not skipped("lm_head"):
        s = target_scale(model.lm_head.weight)
        model.model.norm.weight = model.model.norm.weight / s
        _scale_linear(model.lm_head, s)
        folded["lm_head"] = {"lm_head": s}
    if mtp is not None:
        for k, head in enumerate(mtp.heads):
            path = f"mtp.heads.{k}"
            if skipped(path) or skipped("mtp"):
                continue
            s = target_scale(head.proj.weight)
            head.hnorm.weight = head.hnorm.weight / s
            head.enorm.weight = head.enorm.weight / s
            _scale_linear(head.proj, s)
            folded[path] = {"proj": s, **fold_block(head.block)}
    mx.eval(model.parameters())
    return folded
