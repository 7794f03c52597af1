"""Distillation from a teacher cache's top-k logits (``data.teacher_cache``).

The cache keeps, per position, the teacher's k largest logits ``v`` at ids ``i`` and the
log-sum-exp ``Z`` of its full row, so ``v - Z`` are exact log-probabilities. Two ways to compare a
student with that sparse teacher, per position (both scaled by T², Hinton et al., so the
gradient keeps its size as the temperature T changes):

- ``renorm`` (default, any T): the teacher renormalised over its k ids, ``p̂ = softmax(v / T)``,
  against the student's *full-vocabulary* tempered log-probabilities at those ids,
  ``log q_T[i]``: ``Σ_k p̂ (log p̂ - log q_T[i])``. Because ``Σ_k q_T[i] <= 1`` this is
  ``>= KL(p̂ ‖ q̂)`` (q̂ the student renormalised over the same ids) and is zero only when the
  student puts exactly ``p̂`` on the k ids and nothing elsewhere: mass the student leaks outside
  the teacher's top k is penalised, not ignored.
- ``tail`` (T = 1 only): the exact KL between the two distributions coarsened to k + 1 buckets,
  the k ids and "everything else" (teacher tail ``1 - Σ exp(v - Z)``, known thanks to Z).

Per-position values are weighted like the SGT loss (paper Eq. 2, ``selection.losses``): with
``lam`` > 0 and tagged GT positions (``level``), ``λ·mean_GT + (1-λ)·mean_all`` per example; with
``lam = 0`` a plain mean over supervised (``response``) positions.
"""

from __future__ import annotations

from typing import Dict

import mlx.core as mx
import numpy as np

from cherry_mlx.selection.losses import per_token_ce, sgt_loss_from_ce

MODES = ("renorm", "tail")


def topk_kl(
    student_logits: mx.array,
    idx: mx.array,
    val: mx.array,
    lse: mx.array,
    temperature: float = 1.0,
    mode: str = "renorm",
) -> mx.array:
    """Per-position distillation loss (× T²). (B, T, V), (B, T, k), (B, T, k), (B, T) -> (B, T)"""
    if mode not in MODES:
        raise ValueError(f"distillation mode {mode!r}: use one of {', '.join(MODES)}")
    temp = float(temperature)
    s = student_logits.astype(mx.float32) / temp
    s_logp = s - mx.logsumexp(s, axis=-1, keepdims=True)  # (B, T, V)
    s_k = mx.take_along_axis(s_logp, idx.astype(mx.int32), axis=-1)  # (B, T, k)
    v = val.astype(mx.float32)
    if mode == "renorm":
        t = v / temp
        t_logp = t - mx.logsumexp(t, axis=-1, keepdims=True)  # (B, T, k)
        kl = (mx.exp(t_logp) * (t_logp - s_k)).sum(-1)
        return kl * temp**2
    if temp != 1.0:
        raise ValueError("--kd-mode tail is exact only at temperature 1; use renorm with T != 1")
    t_logp = v - lse.astype(mx.float32)[..., None]  # (B, T, k): exact teacher log-probs
    t_p = mx.exp(t_logp)
    t_tail = mx.maximum(1.0 - t_p.sum(-1), 1e-8)  # (B, T)
    s_tail = mx.maximum(1.0 - mx.exp(s_k).sum(-1), 1e-8)
    return (t_p * (t_logp - s_k)).sum(-1) + t_tail * (mx.log(t_tail) - mx.log(s_tail))


def weighted_mean(per_pos: mx.array, batch: Dict[str, mx.array], lam: float = 0.0, level=1):
    """(loss, ntoks): the SGT weighting (paper Eq. 2) of a per-position loss (B, T)."""
    response = batch["response"].astype(mx.bool_)
    gt = response & (batch["level"] >= level)
    return sgt_loss_from_ce(per_pos, response, gt, lam)


def make_kd_loss(
    temperature: float = 1.0, lam: float = 0.0, mode: str = "renorm", ce_weight: float = 0.0
):
    """``(model, batch) -> (loss, ntoks)`` on a cache batch: top-k KL (weighted as above) plus
    ``ce_weight`` × cross-entropy on the cached next tokens."""
    if mode not in MODES:
        raise ValueError(f"distillation mode {mode!r}: use one of {', '.join(MODES)}")

    def loss_fn(model, batch):
        logits = model(batch["inputs"])  # (B, T, V)
        kl = topk_kl(logits, batch["topk_idx"], batch["topk_val"], batch["lse"], temperature, mode)
        if ce_weight:
            kl = kl + ce_weight * per_token_ce(logits, batch["targets"])
        return weighted_mean(kl, batch, lam)

    return loss_fn


def to_mx(batch: Dict[str, np.ndarray]) -> Dict[str, mx.array]:
    """A cache batch (numpy) as MLX arrays with the dtypes the losses expect."""
    out = {}
    for name, arr in batch.items():
        a = np.asarray(arr)
        if name == "topk_idx":
            a = a.astype(np.int32)
        elif name == "level":
            a = a.astype(np.int32)
        out[name] = mx.array(a)
    out["response"] = out["response"].astype(mx.bool_)
    return out
