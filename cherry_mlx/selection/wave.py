"""Wave measurements of SGT (SPEC Phase 1): split held-out loss, W, W̃, R and ROI.

The paper's claims about selective supervision rest on the loss of a held-out set *split by position
class*: GT positions (level >= k, the supervised set) and non-GT positions (the other response
tokens). Against a baseline (the step-0 checkpoint) we report

    Eq. 3  W   = ΔL_nonGT / ΔL_GT                                  ΔL = L(step 0) - L(step t)
    Eq. 4  W̃   = (ΔL_nonGT / L_nonGT(0)) / (ΔL_GT / L_GT(0))
           R   = ΔL_total(SGT) / ΔL_total(full-sequence)           at matched steps
           ROI = R / (|G| / |T|)

Decisions the paper leaves open (written down here, SPEC "where this file is silent"):
- Losses are token-level means over the whole held-out set (Σ ce / Σ count over all batches), not
  means of per-batch means, so the numbers do not depend on the batch size.
- |G|/|T| is the GT fraction of the held-out response tokens unless the caller passes the fraction
  the run actually supervised (for ``--select random`` it is the same fraction by construction).
- A ratio whose denominator is zero (no GT tokens, no change) is NaN, never an exception: a table
  with a NaN cell is more useful than no table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, Optional, Sequence

import mlx.core as mx

from .losses import CATEGORIES, gt_mask, per_token_ce


@dataclass
class SplitLoss:
    """Held-out mean cross-entropy on total / GT / non-GT response positions, with counts."""

    total: float
    gt: float
    non_gt: float
    n_total: int
    n_gt: int
    n_non_gt: int
    per_category: Dict[str, float] = field(default_factory=dict)  # mean CE on GT tokens of c
    n_per_category: Dict[str, int] = field(default_factory=dict)

    @property
    def gt_fraction(self) -> float:
        """|G| / |T| on this set."""
        return _ratio(self.n_gt, self.n_total)

    @property
    def perplexity(self) -> float:
        return math.exp(self.total) if math.isfinite(self.total) else math.nan

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gt_fraction"] = self.gt_fraction
        d["perplexity"] = self.perplexity
        return d


def _ratio(num: float, den: float) -> float:
    if den == 0 or not (math.isfinite(num) and math.isfinite(den)):
        return math.nan
    return float(num) / float(den)


def split_losses(
    model, batches: Iterable[dict], level: int = 1, categories: Optional[Sequence[str]] = None
) -> SplitLoss:
    """Mean CE over all response / GT / non-GT positions of ``batches`` (the losses.py contract).

    GT means level >= ``level`` (and in ``categories`` when given), i.e. the set SGT supervised.
    Sums are float32 per batch and accumulated in Python floats (float64) across batches.
    """
    sums = {k: 0.0 for k in ("total", "gt", "non_gt")}
    counts = {k: 0.0 for k in sums}
    cat_sum = [0.0] * len(CATEGORIES)
    cat_cnt = [0.0] * len(CATEGORIES)
    for batch in batches:
        ce = per_token_ce(model(batch["inputs"]), batch["targets"])  # (B, T) f32
        resp = batch["response"].astype(mx.float32)
        g = (gt_mask(batch, level, categories) & batch["response"]).astype(mx.float32)
        cat = batch["category"].astype(mx.int32)
        # One-hot over categories restricted to GT positions: (B, T, C) -> per-category sums (C,)
        onehot = (cat[..., None] == mx.arange(len(CATEGORIES))[None, None, :]).astype(mx.float32)
        onehot = onehot * g[..., None]
        parts = [
            (ce * resp).sum(), resp.sum(), (ce * g).sum(), g.sum(),
            (ce[..., None] * onehot).sum(axis=(0, 1)), onehot.sum(axis=(0, 1)),
        ]
        mx.eval(parts)
        t_s, t_n, g_s, g_n, c_s, c_n = parts
        sums["total"] += t_s.item()
        counts["total"] += t_n.item()
        sums["gt"] += g_s.item()
        counts["gt"] += g_n.item()
        for i, (s, n) in enumerate(zip(c_s.tolist(), c_n.tolist())):
            cat_sum[i] += s
            cat_cnt[i] += n
    sums["non_gt"] = sums["total"] - sums["gt"]
    counts["non_gt"] = counts["total"] - counts["gt"]
    return SplitLoss(
        total=_ratio(sums["total"], counts["total"]),
        gt=_ratio(sums["gt"], counts["gt"]),
        non_gt=_ratio(sums["non_gt"], counts["non_gt"]),
        n_total=int(counts["total"]),
        n_gt=int(counts["gt"]),
        n_non_gt=int(counts["non_gt"]),
        per_category={c: _ratio(s, n) for c, s, n in zip(CATEGORIES, cat_sum, cat_cnt) if n},
        n_per_category={c: int(n) for c, n in zip(CATEGORIES, cat_cnt) if n},
    )


def wave_factor(base: SplitLoss, now: SplitLoss) -> float:
    """Eq. 3: W = ΔL_nonGT / ΔL_GT with ΔL = L(base) - L(now)."""
    return _ratio(base.non_gt - now.non_gt, base.gt - now.gt)


def normalised_wave_factor(base: SplitLoss, now: SplitLoss) -> float:
    """Eq. 4: ratio of fractional reductions, (ΔL_nonGT / L_nonGT(0)) / (ΔL_GT / L_GT(0))."""
    return _ratio(
        _ratio(base.non_gt - now.non_gt, base.non_gt), _ratio(base.gt - now.gt, base.gt)
    )


def recovered_fraction(base: SplitLoss, sgt: SplitLoss, full: SplitLoss) -> float:
    """R = ΔL_total(SGT) / ΔL_total(full-sequence), both from the same baseline, matched steps."""
    return _ratio(base.total - sgt.total, base.total - full.total)


def roi(recovered: float, supervised_fraction: float) -> float:
    """ROI = R / (|G| / |T|): fractional loss reduction per fraction of supervised tokens."""
    return _ratio(recovered, supervised_fraction)


@dataclass
class WaveReport:
    """Everything ``cherry-mlx eval`` tabulates for one model against its baseline."""

    now: SplitLoss
    base: Optional[SplitLoss] = None
    full: Optional[SplitLoss] = None  # the full-sequence run at the matched step
    supervised_fraction: Optional[float] = None  # |G|/|T| used for ROI

    @property
    def delta(self) -> Dict[str, float]:
        if self.base is None:
            return {}
        return {k: getattr(self.base, k) - getattr(self.now, k) for k in ("total", "gt", "non_gt")}

    def metrics(self) -> Dict[str, float]:
        out: Dict[str, float] = {}
        if self.base is None:
            return out
        out["W"] = wave_factor(self.base, self.now)
        out["W_norm"] = normalised_wave_factor(self.base, self.now)
        if self.full is not None:
            frac = self.supervised_fraction
            if frac is None:
                frac = self.now.gt_fraction
            out["R"] = recovered_fraction(self.base, self.now, self.full)
            out["ROI"] = roi(out["R"], frac)
            out["supervised_fraction"] = frac
        return out

    def to_dict(self) -> dict:
        return {
            "eval": self.now.to_dict(),
            "baseline": self.base.to_dict() if self.base else None,
            "full_sequence": self.full.to_dict() if self.full else None,
            "delta": self.delta,
            **self.metrics(),
        }
