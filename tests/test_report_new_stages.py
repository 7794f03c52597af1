"""The loop-sweep (Table C.2) and λ-sweep (Table B.1, Observation 6) stages on hand-made results:
their claim rows, verdicts and tables; the runs themselves are in the slow tiny-budget test."""

import pytest

from cherry_mlx.pipelines.stage import get
from cherry_mlx.pipelines.stages.anchor import anchor_rows
from cherry_mlx.pipelines.stages.loops import loops_rows


def loops_result():
    arms = []
    for seed, shift in ((0, 0.0), (1, 0.1), (2, -0.1)):
        for k, loss, depth in ((1, 5.0, 6), (2, 4.0, 14), (8, 3.0, 34), (12, 3.5, 50)):
            arms.append({"loops": k, "seed": seed, "effective_depth": depth, "unrolled": 9.0,
                         "healed": loss + shift})  # fmt: skip
    return {"depth": 30, "unique": 6, "loops": [1, 2, 8, 12], "seeds": [0, 1, 2],
            "source": 2.0, "arms": arms}  # fmt: skip


def test_loop_rows_compare_each_loop_count_with_the_unlooped_core():
    rows = loops_rows(loops_result())
    assert [r["claim"].split(" <")[0] for r in rows[:3]] == [
        "6L×2 (14 effective)", "6L×8 (34 effective)", "6L×12 (50 effective)"]  # fmt: skip
    # ×2 vs ×1: both sides sd 0.1 (n 3), d = 1.0, se = sqrt(2 · 0.01 / 3) = 0.0816, df 4
    assert rows[0]["diff"] == pytest.approx(1.0) and rows[0]["df"] == pytest.approx(4.0)
    assert all(r["verdict"] == "holds" for r in rows[:3])
    assert "4.82 → 2.93 at ×8 (-39.2%)" in rows[1]["paper"]  # Table C.2's 39.2%
    # ×12 (3.5) is worse than ×8 (3.0): the sweet-spot row holds
    assert rows[3]["claim"].startswith("6L×12 is no better than 6L×8")
    assert rows[3]["verdict"] == "holds" and rows[3]["diff"] == pytest.approx(0.5)
    lines = get("loops").section(loops_result())
    assert "| ×8 | 34 | 9 | 3 | 2.93 |" in lines


def anchor_result(pure_non_gt):
    arms = []
    for seed in range(3):
        for lam, d_ng in ((0.0, 0.5), (0.7, 0.4), (1.0, pure_non_gt[seed])):
            arms.append({"lam": lam, "seed": seed, "total": 2.0, "gt": 1.0, "non_gt": 2.2,
                         "d_gt": 0.6, "d_non_gt": d_ng + 0.01 * seed, "W": 1.0})  # fmt: skip
    return {"steps": 3, "seeds": [0, 1, 2], "lambdas": [0.0, 0.7, 1.0],
            "baseline": {"total": 2.5, "gt": 1.6, "non_gt": 2.6}, "arms": arms}  # fmt: skip


def test_pure_gt_rows_collapse_and_degradation():
    collapse = anchor_rows(anchor_result([-1.0, -1.2, -0.8]))
    assert [r["verdict"] for r in collapse] == ["holds", "holds"]  # less than λ 0.7, and < 0
    degrade = anchor_rows(anchor_result([0.1, 0.12, 0.08]))
    # non-GT still improves (> 0): less than anchored holds, the collapse row does not
    assert [r["verdict"] for r in degrade] == ["holds", "does not hold"]
    assert degrade[0]["values"] == pytest.approx([0.1, 0.13, 0.10])
    lines = get("anchor").section(anchor_result([0.1, 0.1, 0.1]))
    assert any(line.startswith("| 1 | 2 | 1 | 2.2 | 0.6 |") for line in lines)
