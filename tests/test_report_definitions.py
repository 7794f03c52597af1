"""The repro stages' definitions on hand-made results: the shuffled arm's R divides by the shuffled
full-sequence arm on shuffled text, the recovered fraction reads the gap to the source trained as
long, and the report names the numbers a result measured before a definition was corrected."""

import pytest

from cherry_mlx.pipelines.report import predates
from cherry_mlx.pipelines.stage import stages
from cherry_mlx.pipelines.stages.compress import compress_rows, recovered_vs_control
from cherry_mlx.pipelines.stages.sgt import all_metrics


def split(total, gt, non_gt):
    return {"total": total, "gt": gt, "non_gt": non_gt, "n_total": 100, "n_gt": 20,
            "n_non_gt": 80, "per_category": {}}  # fmt: skip


def sgt_result(with_full_shuffled: bool):
    arms = {
        "sgt": [{"eval": {"chat": split(2.6, 1.6, 2.85)}}],
        "full": [{"eval": {"chat": split(2.0, 1.5, 2.125)}}],
        "shuffled": [
            {"eval": {"chat": split(4.0, 4.0, 4.0)}, "eval_shuffled": split(5.0, 5.0, 5.0)}
        ],  # fmt: skip
    }
    if with_full_shuffled:
        arms["full_shuffled"] = [{"eval": {"chat": split(3.0, 3.0, 3.0)},
                                  "eval_shuffled": split(4.5, 4.5, 4.5)}]  # fmt: skip
    return {"baseline": {"chat": split(3.0, 2.0, 3.25)}, "baseline_shuffled": split(6.0, 6, 6),
            "arms": arms}  # fmt: skip


def test_shuffled_arm_recovered_fraction_divides_by_the_shuffled_full_arm():
    m = all_metrics(sgt_result(True))
    # coherent: R = (3.0 - 2.6) / (3.0 - 2.0) = 0.4, ROI = 0.4 / 0.2 = 2
    assert m["sgt"][0]["R"] == pytest.approx(0.4) and m["sgt"][0]["ROI"] == pytest.approx(2.0)
    # shuffled text: source 6.0, shuffled SGT 5.0, shuffled full 4.5: R = 1.0 / 1.5
    assert m["shuffled"][0]["R"] == pytest.approx(1 / 1.5)
    assert m["shuffled"][0]["ROI"] == pytest.approx(1 / 1.5 / 0.2)
    assert m["full_shuffled"][0]["R"] == pytest.approx(1.0)
    # an old result (no shuffled full arm), computed as it was: the source's shuffled-text loss
    # minus the coherent full arm's coherent-text loss, (6 - 5) / (6 - 2)
    old = all_metrics(sgt_result(False))
    assert old["shuffled"][0]["R"] == pytest.approx(0.25)


def test_recovered_fraction_against_the_source_trained_as_long():
    arm = {"method": "average", "unique": 2, "loops": 1, "seed": 0, "label": "2L×1",
           "merged": 10.0, "healed": 4.0, "recovered": 0.75}  # fmt: skip
    res = {"depth": 4, "arms": [arm, {**arm, "seed": 1, "healed": 5.0}],
           "control": [{"seed": 0, "loss": 2.0}, {"seed": 1, "loss": 3.0}],
           "source": {"chat": {"total": 2.5}}}  # fmt: skip
    # seed 0: (10 - 4) / (10 - 2) = 0.75; seed 1: (10 - 5) / (10 - 3) = 5/7
    assert recovered_vs_control(res, "2L×1") == pytest.approx([0.75, 5 / 7])
    row = compress_rows({**res, "arms": res["arms"] + _pruned(arm)})[0]
    assert row["values"] == pytest.approx([0.75, 5 / 7]) and row["threshold"] == 0.75


def _pruned(arm):
    return [{**arm, "method": m, "label": f"2L×1 {m}"} for m in ("prune-bi", "prune-angular")]


def test_report_header_names_numbers_measured_before_a_fix():
    order = list(stages())
    sgt = next(s for s in order if s.name == "sgt")
    assert "shuffled-R" in sgt.fixes
    old = predates({"sgt": {"rows": []}}, order)
    assert len(old) == 1 and old[0].startswith("- sgt: the shuffled arm's R and ROI")
    assert predates({"sgt": {"fixes": sorted(sgt.fixes)}}, order) == []
