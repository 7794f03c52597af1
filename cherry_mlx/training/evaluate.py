"""Held-out loss split by position class: total, GT and non-GT response tokens, and per category.

These are the quantities the paper's measurements (wave factor W, W̃, R, ROI) are built from, so the
trainer's evaluation and ``cherry-mlx eval`` share this one function. Sums and counts are
accumulated in float32 on the device and read once at the end.
"""

from __future__ import annotations

import math
from typing import Dict, Iterable, Optional, Sequence

import mlx.core as mx

from cherry_mlx.data.categories import CATEGORIES
from cherry_mlx.selection.losses import gt_mask, split_sums
from cherry_mlx.selection.select import per_token_loss


def loss_breakdown(
    model,
    batches: Iterable[dict],
    level: int = 1,
    categories: Optional[Sequence[str]] = None,
    max_batches: int = -1,
    loss_fn=None,
) -> Dict[str, object]:
    """Mean cross-entropy on total / GT / non-GT response positions of ``batches``, as the dict
    the trainer logs (``evaluation.wave.split_losses`` returns it as a ``SplitLoss``).

    GT means level >= ``level`` (and in ``categories`` when given). Returns
    ``{"total", "gt", "non_gt", "ppl", "per_category": {cat: loss}, "counts": {...}}`` with NaN for
    an empty class; with ``loss_fn`` also ``"loss"``, its token-weighted mean (the training
    objective on held-out data).
    """
    sums = {k: mx.array(0.0) for k in ("total", "gt", "non_gt", "loss")}
    counts = {k: mx.array(0.0) for k in ("total", "gt", "non_gt", "loss")}
    cat_sums = {c: mx.array(0.0) for c in CATEGORIES}
    cat_counts = {c: mx.array(0.0) for c in CATEGORIES}
    for i, batch in enumerate(batches):
        if 0 <= max_batches <= i:
            break
        ce = per_token_loss(model, batch)  # (B, T); logits only at ``pos`` when given
        gt = gt_mask(batch, level, categories)
        for k, (s, n) in split_sums(ce, batch["response"], gt).items():
            sums[k] = sums[k] + s
            counts[k] = counts[k] + n
        resp_gt = gt & batch["response"]
        for ci, c in enumerate(CATEGORIES):
            m = (resp_gt & (batch["category"] == ci)).astype(mx.float32)
            cat_sums[c] = cat_sums[c] + (ce * m).sum()
            cat_counts[c] = cat_counts[c] + m.sum()
        if loss_fn is not None:
            lv, nt = loss_fn(model, batch)
            sums["loss"] = sums["loss"] + lv.astype(mx.float32) * nt
            counts["loss"] = counts["loss"] + nt
        mx.eval(sums, counts, cat_sums, cat_counts)

    def mean(s, n):
        n = n.item()
        return s.item() / n if n > 0 else float("nan")

    out: Dict[str, object] = {k: mean(sums[k], counts[k]) for k in ("total", "gt", "non_gt")}
    if loss_fn is not None:
        out["loss"] = mean(sums["loss"], counts["loss"])
    total = out["total"]
    out["ppl"] = math.exp(min(total, 700.0)) if total == total else float("nan")  # no overflow
    out["per_category"] = {
        c: mean(cat_sums[c], cat_counts[c]) for c in CATEGORIES if cat_counts[c].item() > 0
    }
    out["counts"] = {k: int(counts[k].item()) for k in ("total", "gt", "non_gt")}
    return out
