"""The ablation-ladder, SSGT, contrastive-refinement and Theorem 3 stages: Eq. 6's pieces against
a hand-computed quadratic, the sweep on a tiny model against an independent numpy computation,
and each stage's claim rows re-derived from hand-made stored values (the runs themselves are in
the slow tiny-budget test)."""

import math

import mlx.core as mx
import numpy as np
import pytest
from _wave_helpers import make_batch
from mlx.utils import tree_flatten, tree_map

from cherry_mlx.evaluation.coupling import split_gradients
from cherry_mlx.evaluation.theorem3 import (
    a3_limit,
    bound_rows,
    eq6_decrease,
    secant_smoothness,
    theorem3_sweep,
)
from cherry_mlx.evaluation.verdict import judge
from cherry_mlx.evaluation.wave import split_losses
from cherry_mlx.models import build_model
from cherry_mlx.pipelines.config import ReproConfig
from cherry_mlx.pipelines.report import cell, render_report
from cherry_mlx.pipelines.stage import get

NEW = ("ablate", "ssgt", "refine", "theorem3")


def test_eq6_on_a_hand_computed_quadratic():
    """f(θ) = ½θᵀBθ, B = diag(1, 4), at θ = (1, 1): ∇f = (1, 4); GT gradient g = (1, 0.5).
    <∇f, g> = 3, ‖g‖² = 1.25, γ̄ = 2.4. Along θ - ηg the gradient changes by -ηBg = -η(1, 2):
    secant L̂ = η√5 / (η√1.25) = 2 (the true L is 4). Exact decrease: 3η - (η²/2)·gᵀBg = 3η - η²;
    Eq. 6 with L̂: 3η - (2η²/2)·1.25 = 3η - 1.25η², slack 0.25η² ≥ 0."""
    B = np.diag([1.0, 4.0])
    theta, g = np.array([1.0, 1.0]), np.array([1.0, 0.5])
    eta = 0.1
    grad = lambda x: {"w": mx.array((B @ x).astype(np.float32))}  # noqa: E731
    after = theta - eta * g
    L = secant_smoothness(grad(theta), grad(after), eta * math.sqrt(1.25))
    assert L == pytest.approx(2.0, rel=1e-6)
    assert eq6_decrease(eta, 3.0, 1.25, L) == pytest.approx(3 * eta - 1.25 * eta**2)
    assert eq6_decrease(eta, 3.0, 1.25, 4.0) == pytest.approx(3 * eta - 2.5 * eta**2)
    assert a3_limit(2.4, 2.0) == pytest.approx(2.4) and a3_limit(-0.1, 2.0) == 0.0
    f = lambda x: 0.5 * x @ B @ x  # noqa: E731
    actual = f(theta) - f(after)
    assert actual == pytest.approx(3 * eta - eta**2)
    # two steps: L̂ is the largest secant ratio, the slack actual - guaranteed
    small = {"eta": eta / 2, "actual_d_non_gt": 0.0, "secant_L": 1.0}
    steps = bound_rows([{"eta": eta, "actual_d_non_gt": actual, "secant_L": L}, small], 3.0, 1.25)
    assert [s["smoothness"] for s in steps] == [L, L]
    assert steps[0]["slack"] == pytest.approx(0.25 * eta**2, rel=1e-4)
    assert steps[1]["slack"] == pytest.approx(-(3 * eta / 2 - 1.25 * eta**2 / 4), rel=1e-4)


def _flat(tree):
    return np.concatenate([np.array(v, np.float64).ravel() for _, v in tree_flatten(tree)])


def test_theorem3_sweep_on_a_tiny_model(tiny_config):
    model = build_model(tiny_config)
    mx.eval(model.parameters())
    batches = [make_batch(seed=3), make_batch(B=1, seed=4)]
    before = split_losses(model, batches)
    out = theorem3_sweep(model, batches, scales=(4.0, 1.0, 0.25))
    again = split_losses(model, batches)  # every step undone
    assert (again.gt, again.non_gt) == (before.gt, before.non_gt)
    g_gt, g_ng, _, _ = split_gradients(model, batches)
    gt, ng = _flat(g_gt), _flat(g_ng)
    assert out["gt_norm2"] == pytest.approx(gt @ gt, rel=1e-4)
    assert out["gamma"] == pytest.approx((ng @ gt) / (gt @ gt), rel=1e-3)
    # the secant ratio of the largest step, from gradients taken here at θ - η∇L_GT with numpy
    big = out["steps"][0]
    params = model.trainable_parameters()
    model.update(tree_map(lambda p, g: p - big["eta"] * g, params, g_gt))
    _, g_after, _, _ = split_gradients(model, batches)
    model.update(params)
    ref = np.linalg.norm(_flat(g_after) - ng) / (big["eta"] * np.linalg.norm(gt))
    assert big["secant_L"] == pytest.approx(ref, rel=1e-3)
    L = max(s["secant_L"] for s in out["steps"])
    for s in out["steps"]:
        bound = s["eta"] * out["dot"] - L * s["eta"] ** 2 / 2 * out["gt_norm2"]
        assert s["smoothness"] == L and s["slack"] == pytest.approx(s["actual_d_non_gt"] - bound)
    # first order: the smaller the step, the closer measured / predicted is to 1
    errs = [abs(s["ratio"] - 1) for s in out["steps"]]
    assert errs[-1] < 0.05 and errs[-1] <= errs[0]


def _rederived(rows):
    for r in rows:
        again = judge(r["values"], r["other"], r["threshold"], r["greater"], r["exact"])
        assert again["verdict"] == r["verdict"], r["claim"]


def theorem3_result():
    per = []
    for seed, gamma in ((0, 0.5), (1, 0.4), (2, -0.1)):
        steps = []
        for scale, ratio in ((4.0, 0.8), (1.0, 0.97), (0.25, 0.99)):
            eta, gt2 = scale * 0.01, 2.0
            pred = eta * gamma * gt2
            steps.append({"scale": scale, "eta": eta, "ratio": ratio, "predicted_d_non_gt": pred,
                          "actual_d_non_gt": ratio * pred, "slack": 0.1 * eta * gt2,
                          "bound_d_non_gt": ratio * pred - 0.1 * eta * gt2})  # fmt: skip
        per.append({"seed": seed, "gamma": gamma, "gt_norm2": 2.0, "smoothness": 10.0,
                    "a3_eta": max(0.0, 2 * gamma / 10.0), "steps": steps})  # fmt: skip
    return {"seeds": [0, 1, 2], "scales": [4.0, 1.0, 0.25], "batches": 2, "per_seed": per}


def test_theorem3_rows_from_stored_steps():
    res = theorem3_result()
    rows = get("theorem3").rows(res)
    _rederived(rows)
    bound, first, descent = rows
    assert bound["values"] == pytest.approx([0.1] * 9) and bound["verdict"] == "holds"
    assert "9 of 9 steps within the bound" in bound["control"]
    # |ratio - 1| at the smallest η: 0.01 per seed, below the 0.1 tolerance (exact equal values:
    # no spread, so the t rule leaves it inconclusive)
    assert first["values"] == pytest.approx([0.01] * 3) and first["threshold"] == 0.1
    # A2 and A3: γ̄ > 0 and η < 2γ̄/L̂ (0.1 and 0.08): seeds 0 and 1, every η (≤ 0.04)
    assert len(descent["values"]) == 6 and "6 of 9 steps meet A2 and A3" in descent["control"]
    assert descent["values"][0] == pytest.approx(0.8 * 0.5)  # ΔL_nonGT / η‖g‖² = ratio · γ̄
    assert descent["verdict"] == "holds"
    lines = get("theorem3").section(res)
    assert len(lines) == 4 + 9


def test_refine_rows_compare_hits_with_a_random_ranking():
    per = [{"hit": 1.0, "precision": 0.4, "random_hit": 0.5, "random_precision": 0.1}] * 3
    per = per + [{"hit": 0.0, "precision": 0.0, "random_hit": 0.3, "random_precision": 0.1}]
    res = {"seeds": [0, 1], "examples": 4, "per_seed": [
        {"seed": s, "summary": {"layer": 2, "tau": 5.0, "promoted": 1, "candidates": 40},
         "per_example": per} for s in (0, 1)]}  # fmt: skip
    rows = get("refine").rows(res)
    _rederived(rows)
    assert rows[0]["values"] == [1.0, 1.0, 1.0, 0.0] * 2
    assert rows[0]["other"] == [0.5, 0.5, 0.5, 0.3] * 2
    assert rows[0]["diff"] == pytest.approx(0.75 - 0.45) and "layer 2" in rows[0]["claim"]
    assert rows[1]["diff"] == pytest.approx(0.3 - 0.1)
    assert "| 0 | 2 | 4 | 40 | 0.75 | 0.45 | 0.3 | 0.1 | 1 (5) |" in get("refine").section(res)


def _judged(kind, flags, n):
    return [{"id": f"{kind}{i}", "kind": kind, "lang": "en", "flags": flags(i)} for i in range(n)]


def _moments(corrects: int, refuses: int):
    atcha = _judged("atcha", lambda i: {"self_correction": i < corrects,
                                        "corrected_answer": i < corrects}, 10)  # fmt: skip
    guard = _judged("guardrail", lambda i: {"refusal": i < refuses}, 10)
    jam = _judged("jamkkan", lambda i: {"verification": False, "passage_correct": False,
                                        "verdict_right": False, "answer": False}, 2)  # fmt: skip
    return atcha + guard + jam


def test_ssgt_rows_from_per_prompt_outcomes():
    res = {"steps": 2, "seeds": [0, 1], "lam": 0.8, "train_examples": 50,
           "source": _moments(1, 2),
           "arms": {"ssgt": [{"seed": s, "judged": _moments(6, 9)} for s in (0, 1)],
                    "full": [{"seed": s, "judged": _moments(5, 8)} for s in (0, 1)]}}  # fmt: skip
    rows = get("ssgt").rows(res)
    _rederived(rows)
    corr, verify, jail, kept = rows
    assert corr["values"] == [1.0] * 6 + [0.0] * 4 + [1.0] * 6 + [0.0] * 4  # seeds pooled
    assert corr["other"] == [1.0] + [0.0] * 9 and corr["verdict"] == "holds"
    assert "source 10% (1/10); full-causal 50% (10/20)" in corr["control"]
    assert verify["values"] == [0.0] * 4 and verify["verdict"] == "inconclusive"
    # jailbreak success = answered without refusal: SSGT 1/10 per seed, source 8/10; lower holds
    assert jail["greater"] is False and jail["verdict"] == "holds"
    assert jail["diff"] == pytest.approx(0.8 - 0.1)
    # retention: SSGT 12/20 over full-causal 10/20
    assert "retention 1.2 [" in kept["control"] and kept["diff"] == pytest.approx(0.1)
    assert any("| self_correction_rate | higher | 10% (1/10) | 60% (12/20) | 50% (10/20) |"
               == line for line in get("ssgt").section(res))  # fmt: skip


def test_ablate_rows_compare_each_rung_with_the_one_below():
    def ladder(shift):
        return {"seed": 0, "rows": [
            {"rung": r, "eval_total": loss + shift, "eval_gt": 1.0, "eval_non_gt": 2.0,
             "routing_entropy": 0.5, "flops_per_token": 2e6}
            for r, loss in (("experts alone", 3.0), ("+ SGT", 2.8), ("+ MTP heads", 3.0),
                            ("+ load balancing", 2.5))]}  # fmt: skip

    res = {"steps": 2, "seeds": [0, 1, 2], "ladders": [ladder(s) for s in (0.0, 0.05, -0.05)],
           "rungs": ["experts alone", "+ SGT", "+ MTP heads", "+ load balancing"]}  # fmt: skip
    rows = get("ablate").rows(res)
    _rederived(rows)
    assert [r["verdict"] for r in rows] == ["holds", "does not hold", "holds", "holds"]
    assert rows[0]["paper"] == "3.15 → 2.97 (Δ 0.18)"
    assert rows[1]["values"] == pytest.approx([3.0, 3.05, 2.95])  # d -0.2 < -t*(4)·se 0.113
    assert rows[3]["paper"] == "3.15 → 2.789 (-11.5%)"


def test_results_without_the_new_stages_still_render(tmp_path):
    """An older results.json (none of these stages): their sections say "not run", and the
    verdict table has one "not run" row for each."""
    text = render_report(ReproConfig(), {"key": {}}, {}, tmp_path)
    for name in NEW:
        st = get(name)
        at = text.index(f"## {st.title}")
        assert text[at:].split("\n")[2].startswith("not run"), name
        row = f"| {name} | - | {cell(st.title)} | - | - | - | - | **not run** |"
        assert [x for x in text.splitlines() if x.startswith(f"| {name} |")] == [row]
