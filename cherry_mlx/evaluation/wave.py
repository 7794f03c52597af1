"""Wave measurements of SGT (paper §3.2.4, §4.1): split held-out loss, W, W̃, R and ROI.

The paper's claims about selective supervision rest on the loss of a held-out set *split by position
class*: GT positions (level >= k, the supervised set) and non-GT positions (the other response
tokens). Against a baseline (the step-0 checkpoint) we report

    Eq. 3  W   = ΔL_nonGT / ΔL_GT                                  ΔL = L(step 0) - L(step t)
    Eq. 4  W̃   = (ΔL_nonGT / L_nonGT(0)) / (ΔL_GT / L_GT(0))
           R   = ΔL_total(SGT) / ΔL_total(full-sequence)           at matched steps
           ROI = R / (|G| / |T|)

Decisions the paper leaves open (written down here):
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

from cherry_mlx.training.evaluate import loss_breakdown


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
    model,
    batches: Iterable[dict],
    level: int = 1,
    categories: Optional[Sequence[str]] = None,
    max_batches: int = -1,
) -> SplitLoss:
    """Mean CE over all response / GT / non-GT positions of ``batches`` (the losses.py contract).

    GT means level >= ``level`` (and in ``categories`` when given), i.e. the set SGT supervised.
    The splitting itself is the trainer's (``training.evaluate.loss_breakdown``, a dict), so the
    curves in a run directory and ``cherry-mlx eval`` can never disagree; this returns it as a
    ``SplitLoss`` with its counts.
    """
    d = loss_breakdown(model, batches, level=level, categories=categories, max_batches=max_batches)
    n = d["counts"]
    return SplitLoss(
        total=d["total"],
        gt=d["gt"],
        non_gt=d["non_gt"],
        n_total=n["total"],
        n_gt=n["gt"],
        n_non_gt=n["non_gt"],
        per_category=dict(d["per_category"]),
    )


def wave_factor(base: SplitLoss, now: SplitLoss) -> float:
    """Eq. 3: W = ΔL_nonGT / ΔL_GT with ΔL = L(base) - L(now)."""
    return _ratio(base.non_gt - now.non_gt, base.gt - now.gt)


def normalised_wave_factor(base: SplitLoss, now: SplitLoss) -> float:
    """Eq. 4: ratio of fractional reductions, (ΔL_nonGT / L_nonGT(0)) / (ΔL_GT / L_GT(0))."""
    return _ratio(_ratio(base.non_gt - now.non_gt, base.non_gt), _ratio(base.gt - now.gt, base.gt))


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
