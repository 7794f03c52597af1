"""SGT losses (paper Eq. 1-2) over a token-aligned batch.

Batch contract (built by ``cherry_mlx.data.batching``), all (B, T) and aligned with *targets*:
    inputs    int32  tokens fed to the model
    targets   int32  next tokens
    response  bool   target is a response token (prompt/system/padding are never supervised)
    level     int8   GT level of the target: 0 non-GT, 1 GT, 2 super-GT, 3 SSGT
    category  int8   index into CATEGORIES, -1 for non-GT

Eq. 2 is applied *per example* (an example with no GT token falls back to L_full) and written as
per-token weights so that the loss is normalised by supervised (response) tokens and accumulates
exactly across micro-batches: for example b with response set T_b and GT set G_b,
    w_t = (1-λ)·[t∈T_b] + λ·(|T_b|/|G_b|)·[t∈G_b]      (|G_b| > 0)
    w_t = [t∈T_b]                                        (|G_b| = 0)
so  Σ_t w_t·ce_t / |T_b| = λ·L_GT + (1-λ)·L_full  for each example, and the batch loss is the
response-token-weighted mean of the examples' losses, with ntoks = Σ_b |T_b|.
"""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import mlx.core as mx
import mlx.nn as nn

from cherry_mlx.data.categories import CATEGORIES


def per_token_ce(logits: mx.array, targets: mx.array) -> mx.array:
    """Cross-entropy per position, float32 whatever the model dtype. (B, T, V), (B, T) -> (B, T)"""
    return nn.losses.cross_entropy(logits.astype(mx.float32), targets, reduction="none")


def gt_mask(batch, level: int = 1, categories: Optional[Iterable[str]] = None) -> mx.array:
    """Positions supervised as GT: response tokens with level >= ``level`` in ``categories``."""
    mask = batch["response"] & (batch["level"] >= level)
    if categories is not None:
        idx = [CATEGORIES.index(c) for c in categories]
        in_cat = mx.zeros(batch["category"].shape, dtype=mx.bool_)
        for i in idx:
            in_cat = in_cat | (batch["category"] == i)
        mask = mask & in_cat
    return mask


def sgt_weights(response: mx.array, gt: mx.array, lam: float) -> mx.array:
    """Per-token weights of Eq. 2 (see module docstring). (B, T) bool, (B, T) bool -> (B, T) f32"""
    resp = response.astype(mx.float32)
    g = (gt & response).astype(mx.float32)
    n_resp = resp.sum(axis=1, keepdims=True)  # (B, 1)
    n_gt = g.sum(axis=1, keepdims=True)
    has_gt = n_gt > 0
    lam_b = mx.where(has_gt, lam, 0.0)
    scale = n_resp / mx.maximum(n_gt, 1.0)
    return (1.0 - lam_b) * resp + lam_b * scale * g


def sgt_loss_from_ce(ce: mx.array, response: mx.array, gt: mx.array, lam: float):
    """(loss, ntoks) of Eq. 2 from per-token cross-entropy."""
    w = sgt_weights(response, gt, lam)
    ntoks = response.astype(mx.float32).sum()
    return (w * ce).sum() / mx.maximum(ntoks, 1.0), ntoks


def sgt_loss(model, batch, lam: float = 0.7, level: int = 1, categories: Sequence[str] = None):
    """The mixed loss λ·L_GT + (1-λ)·L_full as a ``(model, batch) -> (loss, ntoks)`` function."""
    ce = per_token_ce(model(batch["inputs"]), batch["targets"])
    return sgt_loss_from_ce(ce, batch["response"], gt_mask(batch, level, categories), lam)


def full_loss(model, batch):
    """Plain response-token cross-entropy (L_full), the same contract as ``sgt_loss``."""
    ce = per_token_ce(model(batch["inputs"]), batch["targets"])
    resp = batch["response"].astype(mx.float32)
    ntoks = resp.sum()
    return (ce * resp).sum() / mx.maximum(ntoks, 1.0), ntoks


def split_sums(ce: mx.array, response: mx.array, gt: mx.array):
    """Summed loss and counts on total / GT / non-GT response positions (for eval and W, ROI)."""
    resp = response.astype(mx.float32)
    g = (gt & response).astype(mx.float32)
    ng = resp - g
    return {
        "total": ((ce * resp).sum(), resp.sum()),
        "gt": ((ce * g).sum(), g.sum()),
        "non_gt": ((ce * ng).sum(), ng.sum()),
    }
