"""Activation-aware scaling (AWQ, Lin et al., 2023) for every MLX format, NVFP4 included.

mlx-lm's AWQ (``mlx_lm.quant.awq``) searches its scales against affine quantisation only. The
idea carries over unchanged: input channels with large activations matter most, so scale them up
before quantising (their weights get a finer share of each block's grid) and fold the inverse
into the layer feeding them, which keeps the full-precision function exact:

    norm g -> q, k, v (gate, up):  g' = g / s,  W' = W · diag(s)      (RMSNorm is linear in g)
    up -> down:                    W_up' = diag(1/s) · W_up,  W_down' = W_down · diag(s)
                                   (SwiGLU is linear in the up branch)

with s = ā^α per input channel (ā: mean |x| on calibration tokens, normalised to geometric mean
1) and α in [0, 1] chosen per group of layers to minimise ‖X Wᵀ − (X/s) Q(W·s)ᵀ‖² on those
tokens. Runs before the NVFP4 tensor-scale fold, which then picks its powers of two on the
rescaled weights.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import mlx.core as mx
import mlx.nn as nn

from cherry_mlx.quant.fold import is_llama_block, target_scale

ALPHAS = [i / 10 for i in range(11)]
MAX_TOKENS = 1024  # calibration rows kept per layer input for the search


class _Inputs(nn.Module):
    """Wraps a layer and keeps (a sample of) its inputs."""

    def __init__(self, module):
        super().__init__()
        self.module, self.xs = module, []

    def __call__(self, x, *args, **kwargs):
        self.xs.append(x.reshape(-1, x.shape[-1]).astype(mx.float32))
        return self.module(x, *args, **kwargs)


def _qdq(w: mx.array, mode: str, group: int, bits: int) -> mx.array:
    parts = mx.quantize(w, group, bits, mode=mode)
    biases = parts[2] if len(parts) == 3 else None
    return mx.dequantize(parts[0], parts[1], biases, group, bits, mode=mode, dtype=w.dtype)


def _target(w: mx.array, mode: str) -> float:
    """Power-of-two pre-scale (the NVFP4 fold's) so the search sees the error it will get."""
    return target_scale(w) if mode == "nvfp4" else 1.0


def search_scale(
    x: mx.array, weights: List[mx.array], mode: str, group: int, bits: int
) -> mx.array:
    """Best s (in,) for the layers ``weights`` (each (out, in)) sharing the input x (N, in)."""
    amean = mx.abs(x).mean(axis=0) + 1e-8  # (in,)
    refs = [x @ w.T for w in weights]  # (N, out) each
    best, best_s = None, mx.ones_like(amean)
    for alpha in ALPHAS:
        s = amean**alpha
        s = s / mx.exp(mx.log(s).mean())  # geometric mean 1: only the shape matters
        err = 0.0
        for w, ref in zip(weights, refs):
            ws = w * s  # (out, in)
            t = _target(ws, mode)
            err += (((x / s) @ (_qdq(ws * t, mode, group, bits) / t).T - ref) ** 2).mean().item()
        if best is None or err < best:
            best, best_s = err, s
    return best_s


def awq_scale(model, batches: Sequence[mx.array], mode: str, group: int, bits: int) -> Dict:
    """Search and fold AWQ scales into every Llama block of ``model`` (in place); returns the
    spread (max/min) of the chosen scales per block (attn, mlp, down), for the report."""
    blocks = list(model.layers)
    if not all(is_llama_block(b) for b in blocks):
        raise ValueError("--calibrate awq needs Llama blocks (q/k/v/o, gate/up/down)")
    taps = {}
    for i, b in enumerate(blocks):
        for name, parent, attr in (("attn", b.self_attn, "q_proj"), ("mlp", b.mlp, "gate_proj"),
                                   ("down", b.mlp, "down_proj")):  # fmt: skip
            taps[(i, name)] = (parent, attr, _Inputs(getattr(parent, attr)))
            setattr(parent, attr, taps[(i, name)][2])
    try:
        for x in batches:
            model(x)
            mx.eval([t[2].xs for t in taps.values()])
    finally:
        for parent, attr, tap in taps.values():
            setattr(parent, attr, tap.module)
    spread = {}
    for i, b in enumerate(blocks):
        a, m = b.self_attn, b.mlp
        x = {k: mx.concatenate(taps[(i, k)][2].xs)[:MAX_TOKENS] for k in ("attn", "mlp", "down")}
        s = search_scale(x["attn"], [a.q_proj.weight, a.k_proj.weight, a.v_proj.weight],
                         mode, group, bits)  # fmt: skip
        b.input_layernorm.weight = b.input_layernorm.weight / s
        for lin in (a.q_proj, a.k_proj, a.v_proj):
            lin.weight = lin.weight * s
        s2 = search_scale(x["mlp"], [m.gate_proj.weight, m.up_proj.weight], mode, group, bits)
        b.post_attention_layernorm.weight = b.post_attention_layernorm.weight / s2
        m.gate_proj.weight = m.gate_proj.weight * s2
        m.up_proj.weight = m.up_proj.weight * s2
        s3 = search_scale(x["down"], [m.down_proj.weight], mode, group, bits)
        m.up_proj.weight = m.up_proj.weight / s3[:, None]
        if "bias" in m.up_proj:
            m.up_proj.bias = m.up_proj.bias / s3
        m.down_proj.weight = m.down_proj.weight * s3
        spread[f"model.layers.{i}"] = [round((v.max() / v.min()).item(), 2) for v in (s, s2, s3)]
        mx.eval(b.parameters())
    return spread
