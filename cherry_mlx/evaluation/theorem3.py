"""Theorem 3's bound (paper Eq. 6) checked at several step sizes, with the smoothness measured.

One SGD step on the GT loss alone, θ' = θ - η·g with g = ∇L_GT, satisfies under (A1) L-smoothness

    L_nonGT(θ') ≤ L_nonGT(θ) - η·γ̄·‖g‖² + (L·η²/2)·‖g‖²                       (Eq. 6)

i.e. the non-GT loss falls by at least η·<∇L_nonGT, g> - (L·η²/2)·‖g‖² (γ̄·‖g‖² = <∇L_nonGT, g>),
which is positive for η < 2γ̄/L (A3). The first-order part, ΔL_nonGT ≈ η·γ̄·‖g‖², is
``coupling.theorem3_check``'s prediction.

L is not known for a network; it is estimated from the measured curvature along the step: at
each η the gradient of L_nonGT is taken again at θ' and the secant ratio

    L̂_η = ‖∇L_nonGT(θ') - ∇L_nonGT(θ)‖ / ‖θ' - θ‖ = ‖∇L_nonGT(θ') - ∇L_nonGT(θ)‖ / (η·‖g‖)

(the definition of L-smoothness on that pair of points) is recorded; L̂ = max over the η tried is
the one constant the bound is checked with. That is a lower estimate of the global L (a real L
bounds every pair of points), so a bound that fails with it would fail with any valid L too, and
it is measured from gradients, not from the loss values the bound is checked against.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Sequence

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map

from cherry_mlx.evaluation.coupling import (
    default_eta,
    split_gradients,
    theorem3_check,
    tree_dot,
)
from cherry_mlx.evaluation.wave import split_losses

SCALES = (16.0, 4.0, 1.0, 0.25)  # multiples of ``default_eta`` (a 1% predicted GT drop)


def secant_smoothness(grad_before, grad_after, step_norm: float) -> float:
    """‖∇f(θ') - ∇f(θ)‖ / ‖θ' - θ‖ for gradient trees at two points ``step_norm`` apart."""
    if step_norm <= 0:
        return math.nan
    diff = tree_map(lambda a, b: b.astype(mx.float32) - a.astype(mx.float32),
                    grad_before, grad_after)  # fmt: skip
    return math.sqrt(max(tree_dot(diff, diff), 0.0)) / step_norm


def eq6_decrease(eta: float, dot: float, gt_norm2: float, smoothness: float) -> float:
    """The decrease of L_nonGT that Eq. 6 guarantees: η·<∇L_nonGT, g> - (L·η²/2)·‖g‖²."""
    return eta * dot - smoothness * eta * eta / 2 * gt_norm2


def a3_limit(gamma: float, smoothness: float) -> float:
    """The largest η for which Eq. 6 guarantees descent (2γ̄/L; 0 when γ̄ ≤ 0)."""
    if not smoothness > 0 or not gamma > 0:
        return 0.0
    return 2 * gamma / smoothness


def bound_rows(steps: List[Dict[str, Any]], dot: float, gt_norm2: float) -> List[Dict[str, Any]]:
    """``steps`` (``eta``, ``actual_d_non_gt``, ``secant_L``) with the bound added: L̂ = max of
    the secant ratios, the guaranteed decrease and the slack actual - guaranteed (≥ 0 when the
    bound holds)."""
    smooth = max((s["secant_L"] for s in steps if math.isfinite(s["secant_L"])), default=math.nan)
    out = []
    for s in steps:
        bound = eq6_decrease(s["eta"], dot, gt_norm2, smooth)
        out.append({**s, "smoothness": smooth, "bound_d_non_gt": bound,
                    "slack": s["actual_d_non_gt"] - bound})  # fmt: skip
    return out


def _gradient_at(model: nn.Module, batches, grad_gt, eta: float, level: int):
    """∇L_nonGT at θ - η·∇L_GT (the model restored to θ afterwards)."""
    params = model.trainable_parameters()
    model.update(tree_map(lambda p, g: p - eta * g.astype(p.dtype), params, grad_gt))
    try:
        _, g_ng, _, _ = split_gradients(model, batches, level)
    finally:
        model.update(params)
    return g_ng


def theorem3_sweep(
    model: nn.Module, batches: Sequence[dict], scales: Sequence[float] = SCALES, level: int = 1
) -> Dict[str, Any]:
    """γ̄, ‖∇L_GT‖² and, per η = scale·``default_eta``, the actual one-step changes, the
    first-order prediction, the secant smoothness and Eq. 6's bound (JSON numbers)."""
    batches = list(batches)
    g_gt, g_ng, l_gt, l_ng = split_gradients(model, batches, level)
    dot, gt2 = tree_dot(g_ng, g_gt), tree_dot(g_gt, g_gt)
    eta0 = default_eta(l_gt, gt2)
    before = split_losses(model, batches, level)
    steps = []
    for scale in scales:
        eta = scale * eta0
        check = theorem3_check(model, batches, g_gt, dot, gt2, eta, level, before=before)
        after = _gradient_at(model, batches, g_gt, eta, level)
        secant = secant_smoothness(g_ng, after, eta * math.sqrt(gt2))
        steps.append({**check.to_dict(), "scale": scale, "secant_L": secant})
    steps = bound_rows(steps, dot, gt2)
    gamma = dot / gt2 if gt2 else math.nan
    return {
        "gamma": gamma, "dot": dot, "gt_norm2": gt2, "loss_gt": l_gt, "loss_non_gt": l_ng,
        "eta0": eta0, "smoothness": steps[0]["smoothness"] if steps else math.nan,
        "a3_eta": a3_limit(gamma, steps[0]["smoothness"]) if steps else 0.0, "steps": steps,
    }  # fmt: skip
