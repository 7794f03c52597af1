"""Gradient coupling γ̄ (paper Eq. 5) and a one-step check of Theorem 3.

    γ̄ = <∇L_nonGT, ∇L_GT> / ‖∇L_GT‖²        over all trainable parameters

is the regression coefficient of the non-GT gradient on the GT gradient. Theorem 3's first-order
statement is that one SGD step on the GT loss alone, θ' = θ - η∇L_GT, changes the non-GT loss by

    ΔL_nonGT = L_nonGT(θ) - L_nonGT(θ') ≈ η·<∇L_nonGT, ∇L_GT> = η·γ̄·‖∇L_GT‖²

(and the GT loss by ΔL_GT ≈ η‖∇L_GT‖², so the one-step wave factor is ≈ γ̄). ``theorem3_check``
takes that step for real and reports predicted vs actual; the gap is the O(η²) curvature term.

Both losses are token-level means over the whole set of batches: the gradients are accumulated as
gradients of *sums* and divided by the total counts, so they are exact for any batching.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map

from cherry_mlx.evaluation.wave import split_losses
from cherry_mlx.selection.losses import gt_mask, per_token_ce


def tree_dot(a, b) -> float:
    """Σ over all leaves of <a, b>, each leaf reduced in float32, summed in float64."""
    leaves_a, leaves_b = tree_flatten(a), tree_flatten(b)
    assert [k for k, _ in leaves_a] == [k for k, _ in leaves_b], "gradient trees differ"
    parts = [
        (x.astype(mx.float32) * y.astype(mx.float32)).sum()
        for (_, x), (_, y) in zip(leaves_a, leaves_b)
    ]
    mx.eval(parts)
    return float(sum(p.item() for p in parts))


def split_gradients(model: nn.Module, batches: Sequence[dict], level: int = 1, categories=None):
    """(∇L_GT, ∇L_nonGT, L_GT, L_nonGT) over the trainable parameters, losses as token means."""

    def class_sums(batch):
        # Summed CE on GT and on non-GT response positions (sums: exact across batches).
        ce = per_token_ce(model(batch["inputs"]), batch["targets"])  # (B, T)
        g = (gt_mask(batch, level, categories) & batch["response"]).astype(mx.float32)
        ng = batch["response"].astype(mx.float32) - g
        return (ce * g).sum(), (ce * ng).sum()

    # One forward+backward per class: measurement code, clarity over speed.
    grad_gt = nn.value_and_grad(model, lambda batch: class_sums(batch)[0])
    grad_ng = nn.value_and_grad(model, lambda batch: class_sums(batch)[1])
    acc_gt = acc_ng = None
    s_gt = s_ng = n_gt = n_ng = 0.0
    for batch in batches:
        v_gt, g_gt = grad_gt(batch)
        v_ng, g_ng = grad_ng(batch)
        g = (gt_mask(batch, level, categories) & batch["response"]).astype(mx.float32).sum()
        n = batch["response"].astype(mx.float32).sum()
        acc_gt = g_gt if acc_gt is None else tree_map(mx.add, acc_gt, g_gt)
        acc_ng = g_ng if acc_ng is None else tree_map(mx.add, acc_ng, g_ng)
        mx.eval(acc_gt, acc_ng, v_gt, v_ng, g, n)
        s_gt += v_gt.item()
        s_ng += v_ng.item()
        n_gt += g.item()
        n_ng += n.item() - g.item()
    if acc_gt is None:
        raise ValueError("no batches to measure the gradient coupling on")
    if n_gt == 0 or n_ng == 0:
        raise ValueError(
            f"coupling needs both GT and non-GT response tokens (got {int(n_gt)} GT, "
            f"{int(n_ng)} non-GT); check the data's GT annotations or --level"
        )
    acc_gt = tree_map(lambda x: x / n_gt, acc_gt)
    acc_ng = tree_map(lambda x: x / n_ng, acc_ng)
    mx.eval(acc_gt, acc_ng)
    return acc_gt, acc_ng, s_gt / n_gt, s_ng / n_ng


@dataclass
class StepCheck:
    """One actual GT-only SGD step of size ``eta`` against Theorem 3's first-order prediction."""

    eta: float
    predicted_d_non_gt: float  # η·γ̄·‖∇L_GT‖²
    actual_d_non_gt: float  # L_nonGT(θ) - L_nonGT(θ - η∇L_GT)
    predicted_d_gt: float  # η·‖∇L_GT‖²
    actual_d_gt: float

    @property
    def ratio(self) -> float:
        """actual / predicted non-GT decrease: 1 to first order."""
        if self.predicted_d_non_gt == 0:
            return math.nan
        return self.actual_d_non_gt / self.predicted_d_non_gt

    @property
    def one_step_wave(self) -> float:
        """ΔL_nonGT / ΔL_GT of this single step (≈ γ̄ to first order)."""
        return self.actual_d_non_gt / self.actual_d_gt if self.actual_d_gt else math.nan

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "one_step_wave": self.one_step_wave}


@dataclass
class Coupling:
    """γ̄ and the quantities it is made of; ``checks`` holds the Theorem-3 steps."""

    gamma: float
    dot: float  # <∇L_nonGT, ∇L_GT>
    gt_norm2: float  # ‖∇L_GT‖²
    non_gt_norm2: float
    loss_gt: float
    loss_non_gt: float
    n_params: int
    checks: List[StepCheck] = field(default_factory=list)

    @property
    def cosine(self) -> float:
        den = math.sqrt(self.gt_norm2 * self.non_gt_norm2)
        return self.dot / den if den else math.nan

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cosine"] = self.cosine
        d["checks"] = [c.to_dict() for c in self.checks]
        return d


def default_eta(loss_gt: float, gt_norm2: float, fraction: float = 0.01) -> float:
    """Step size whose predicted GT decrease η‖∇L_GT‖² is ``fraction`` of L_GT (scale-free)."""
    return fraction * loss_gt / gt_norm2 if gt_norm2 > 0 else 0.0


def theorem3_check(
    model: nn.Module,
    batches: Sequence[dict],
    grad_gt,
    dot: float,
    gt_norm2: float,
    eta: float,
    level: int = 1,
    categories=None,
    before=None,
) -> StepCheck:
    """Take θ' = θ - η∇L_GT on the trainable parameters, measure, and restore θ exactly."""
    before = before or split_losses(model, batches, level, categories)
    params = model.trainable_parameters()
    model.update(tree_map(lambda p, g: p - eta * g.astype(p.dtype), params, grad_gt))
    try:
        after = split_losses(model, batches, level, categories)
    finally:
        model.update(params)  # the original arrays: nothing was modified in place
    return StepCheck(
        eta=eta,
        predicted_d_non_gt=eta * dot,
        actual_d_non_gt=before.non_gt - after.non_gt,
        predicted_d_gt=eta * gt_norm2,
        actual_d_gt=before.gt - after.gt,
    )


def measure_coupling(
    model: nn.Module,
    batches: Sequence[dict],
    level: int = 1,
    categories=None,
    etas: Optional[Sequence[float]] = None,
    check: bool = True,
) -> Coupling:
    """γ̄ over all trainable parameters, plus Theorem-3 steps (default η: see ``default_eta``,
    tried at 4×, 1× and ¼× so the first-order convergence is visible)."""
    batches = list(batches)
    g_gt, g_ng, l_gt, l_ng = split_gradients(model, batches, level, categories)
    dot = tree_dot(g_ng, g_gt)
    gt2 = tree_dot(g_gt, g_gt)
    ng2 = tree_dot(g_ng, g_ng)
    n_params = sum(v.size for _, v in tree_flatten(model.trainable_parameters()))
    out = Coupling(
        gamma=dot / gt2 if gt2 else math.nan,
        dot=dot,
        gt_norm2=gt2,
        non_gt_norm2=ng2,
        loss_gt=l_gt,
        loss_non_gt=l_ng,
        n_params=n_params,
    )
    if check:
        if etas is None:
            eta0 = default_eta(l_gt, gt2)
            etas = [4 * eta0, eta0, eta0 / 4]
        before = split_losses(model, batches, level, categories)
        out.checks = [
            theorem3_check(model, batches, g_gt, dot, gt2, e, level, categories, before)
            for e in etas
        ]
    return out
