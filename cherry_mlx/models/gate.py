"""The MoEE gate (paper §3.4.1, Eq. 10) and the Switch load-balancing loss.

``g(x) = softmax(W_g x)`` over N experts; the top-k experts of each token are kept and their gate
values renormalised to sum to 1 (ĝ), so ``y = Σ_{i∈TopK} ĝ_i E_i(x)``. Renormalising after the
softmax equals Mixtral's softmax over the k kept logits; we write it the paper's way so the test
can follow Eq. 10 literally.

Load balancing is Switch Transformer's ``α·N·Σ_i f_i·P_i`` with f_i the fraction of token
assignments routed to expert i (top-k slots, so Σ f_i = 1 for any k) and P_i the mean gate
probability of expert i, both over the supervised (masked) positions. Since f is piecewise
constant, only P carries gradient: the loss pushes probability away from over-used experts. It is
α at uniform routing and rises towards α·N as routing collapses onto one expert.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np


class Gate(nn.Module):
    """Linear router ``W_g`` (no bias): (..., D) -> gate logits (..., N)."""

    def __init__(self, dims: int, num_experts: int):
        super().__init__()
        # nn.Linear's default init: token-dependent random routing at step 0. A zero init would
        # tie every token, hand them all to expert 0 and let rich-get-richer do the rest.
        self.proj = nn.Linear(dims, num_experts, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.proj(x)


def topk_gate(gate_logits: mx.array, k: int):
    """Eq. 10 routing. (..., N) logits -> probs (..., N), indices (..., k), ĝ (..., k).

    ``probs`` is the full softmax (for the balance loss and entropy); ``weights`` are the top-k
    probabilities renormalised to sum to 1.
    """
    n = gate_logits.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"top_k={k} must be between 1 and the number of experts ({n})")
    probs = mx.softmax(gate_logits.astype(mx.float32), axis=-1, precise=True)  # (..., N)
    if k == n:
        inds = mx.broadcast_to(mx.arange(n), probs.shape)
    else:
        inds = mx.argpartition(-probs, kth=k - 1, axis=-1)[..., :k]  # (..., k)
    inds = mx.stop_gradient(inds)
    top = mx.take_along_axis(probs, inds, axis=-1)  # (..., k)
    # Values are exactly Eq. 10's renormalised ĝ. The denominator is held constant for the
    # gradient (Switch-style): with exact renormalisation top-1 weights are identically 1 and the
    # task loss would never reach the router.
    weights = top / mx.stop_gradient(top.sum(axis=-1, keepdims=True))
    return probs, inds, weights


def dense_weights(inds: mx.array, weights: mx.array, num_experts: int) -> mx.array:
    """Scatter ĝ (..., k) at ``inds`` into a dense (..., N) weight with zeros elsewhere."""
    onehot = inds[..., None] == mx.arange(num_experts)  # (..., k, N)
    return (onehot.astype(weights.dtype) * weights[..., None]).sum(axis=-2)


def balance_loss(
    probs: mx.array, inds: mx.array, mask: Optional[mx.array] = None, alpha: float = 1.0
) -> mx.array:
    """Switch load balancing ``α·N·Σ_i f_i·P_i``. probs (..., N), inds (..., k), mask (...) bool."""
    n = probs.shape[-1]
    k = inds.shape[-1]
    m = mx.ones(probs.shape[:-1]) if mask is None else mask.astype(mx.float32)
    denom = mx.maximum(m.sum(), 1.0)
    counts = (inds[..., None] == mx.arange(n)).astype(mx.float32).sum(axis=-2)  # (..., N)
    f = mx.stop_gradient((counts * m[..., None]).reshape(-1, n).sum(axis=0) / (denom * k))  # (N,)
    p = (probs * m[..., None]).reshape(-1, n).sum(axis=0) / denom  # (N,)
    return alpha * n * (f * p).sum()


def routing_entropy(probs: np.ndarray) -> float:
    """Entropy of the mean routing distribution, normalised to [0, 1] by log N (1 = balanced)."""
    p = np.asarray(probs, dtype=np.float64).reshape(-1, probs.shape[-1]).mean(axis=0)
    n = p.shape[-1]
    if n < 2:
        return 0.0
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(n))


def routing_report(
    probs: np.ndarray,
    top1: np.ndarray,
    mask: np.ndarray,
    level: np.ndarray,
    category: np.ndarray,
    categories: Sequence[str],
) -> Dict:
    """Per-expert load and which GT categories each expert wins, over masked positions.

    probs (B, T, N), top1 (B, T) int, mask/level/category (B, T). "Wins" = the top-1 expert of
    the token; the report gives, per category, the share of its GT tokens routed to each expert.
    """
    n = probs.shape[-1]
    m = mask.astype(bool)
    top = top1[m]
    load = np.bincount(top, minlength=n) / max(len(top), 1)
    gt = m & (level >= 1)
    per_cat = {}
    for ci, name in enumerate(categories):
        sel = gt & (category == ci)
        if sel.any():
            share = np.bincount(top1[sel], minlength=n) / sel.sum()
            per_cat[name] = {"tokens": int(sel.sum()), "share": [round(float(s), 4) for s in share]}
    return {
        "num_experts": n,
        "tokens": int(m.sum()),
        "load": [round(float(x), 4) for x in load],
        "mean_prob": [round(float(x), 4) for x in probs[m].mean(axis=0)] if m.any() else [],
        "routing_entropy": round(routing_entropy(probs[m]) if m.any() else 0.0, 4),
        "token_entropy": round(_mean_token_entropy(probs[m]), 4) if m.any() else 0.0,
        "gt_categories": per_cat,
    }


def _mean_token_entropy(p: np.ndarray) -> float:
    """Mean per-token gate entropy / log N (0 = confident routing, 1 = undecided)."""
    n = p.shape[-1]
    if n < 2:
        return 0.0
    p = np.clip(p.astype(np.float64), 1e-12, 1.0)
    return float((-(p * np.log(p)).sum(axis=-1)).mean() / np.log(n))
