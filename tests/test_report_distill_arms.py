"""The teacher-signal arms of ``repro`` on hand-made results: compression healed by distillation
against the paper's SGT healing at its layout, NVFP4 + DWQ against round-to-nearest NVFP4, and
results made before these arms (no rows, no table lines, no knobs in the header: the committed
report renders unchanged)."""

import pytest

from cherry_mlx.pipelines.config import ReproConfig
from cherry_mlx.pipelines.report import render_report
from cherry_mlx.pipelines.stage import get
from cherry_mlx.pipelines.stages.compress import compress_rows, distill_plan, label_of
from cherry_mlx.pipelines.stages.quant import quant_rows


def arm(label, method, n, loops, seed, healed, heal="sgt", **kw):
    return {"label": label, "method": method, "unique": n, "loops": loops, "seed": seed,
            "heal": heal, "merged": 10.0, "healed": healed, "recovered": 0.5, "kept": None,
            "effective_depth": n, "params": 1e6, "heal_seconds": 5.0,
            "eval": {"chat": {"perplexity": 9.0}}, **kw}  # fmt: skip


def compress_result(distilled=True):
    arms, control = [], []
    for seed, s in ((0, 0.0), (1, 0.1), (2, -0.1)):
        arms += [arm("4L×1", "average", 4, 1, seed, 5.0 + s),
                 arm("4L×2", "average", 4, 2, seed, 4.8 + s),
                 arm("4L×1 prune-bi", "prune-bi", 4, 1, seed, 5.5 + s, kept=[[0], [3]]),
                 arm("4L×1 prune-angular", "prune-angular", 4, 1, seed, 5.6 + s,
                     kept=[[0], [5]])]  # fmt: skip
        if distilled:
            kd = dict(heal="distill", local=7.0, local_seconds=1.0)
            arms += [arm("4L×1 prune-bi+local+distill", "prune-bi", 4, 1, seed, 4.0 + s,
                         kept=[[0], [3]], **kd),
                     arm("4L×1 average+local+distill", "average", 4, 1, seed, 5.05 + s, **kd),
                     arm("4L×2 prune-loop+local+distill", "prune-loop", 4, 2, seed, 6.0 + s,
                         kept=[[0], [7]], **kd)]  # fmt: skip
        control.append({"seed": seed, "loss": 2.0})
    res = {"depth": 8, "seeds": [0, 1, 2], "arms": arms, "control": control,
           "source": {"chat": {"total": 2.5, "perplexity": 12.0}}}  # fmt: skip
    if distilled:
        res["distill"] = {"e2e_steps": 4, "local_steps": 2, "local_batch": 8,
                          "cache": {"rows": 16, "tokens": 900, "k": 32, "seq_len": 128,
                                    "seconds": 3.0}}  # fmt: skip
    return res


def test_distill_plan_takes_half_depth_and_the_most_compressed_looped_layout():
    plan = [(15, 1), (15, 2), (10, 3), (6, 5), (6, 8)]  # the cpu budget on a 30-layer source
    assert distill_plan(plan) == [("prune-bi", 15, 1), ("average", 15, 1), ("prune-loop", 6, 8)]
    assert distill_plan([(4, 1)]) == [("prune-bi", 4, 1), ("average", 4, 1)]
    assert label_of("prune-loop", 6, 8, "distill") == "6L×8 prune-loop+local+distill"
    assert label_of("prune-bi", 15, 1) == "15L×1 prune-bi"


def test_distill_rows_read_each_arm_against_the_papers_sgt_arm_at_its_layout():
    rows = compress_rows(compress_result())
    kd = [r for r in rows if r["table"] == "Table 5 (healing)"]
    assert [r["claim"].split(" heals")[0] for r in kd] == [
        "4L×1 prune-bi+local+distill", "4L×1 average+local+distill",
        "4L×2 prune-loop+local+distill"]  # fmt: skip
    assert "(4L×1) at 4 end-to-end steps" in kd[0]["claim"]
    assert "(4L×2)" in kd[2]["claim"]
    # prune-bi + distill 4.0 ± 0.1 vs SGT 5.0 ± 0.1 (n 3 each): d = -1, se 0.0816, df 4: holds
    assert kd[0]["values"] == pytest.approx([4.0, 4.1, 3.9])
    assert kd[0]["other"] == pytest.approx([5.0, 5.1, 4.9])
    assert kd[0]["verdict"] == "holds"
    # 5.05 vs 5.0: d 0.05 < t*(4) 2.776 · 0.0816: inconclusive; 6.0 vs 4.8: does not hold
    assert [kd[1]["verdict"], kd[2]["verdict"]] == ["inconclusive", "does not hold"]
    # the paper's rows keep reading the SGT arms only: one row per average+SGT layout
    recov = [r for r in rows if r["table"] == "Tables 5, C.1"]
    assert [r["claim"].split(":")[0] for r in recov] == ["8L → 4L×1", "8L → 4L×2"]
    lines = get("compress").section(compress_result())
    assert "| 4L×1 prune-bi+local+distill | 10 | 7 | 4 | 4L×1 | 5 | 1 | 5 | 5 |" in lines


def test_results_before_the_distill_arms_render_as_before():
    old = compress_result(distilled=False)
    for a in old["arms"]:
        del a["heal"], a["heal_seconds"]
    assert all(r["table"] != "Table 5 (healing)" for r in compress_rows(old))
    assert not any("teacher cache" in line for line in get("compress").section(old))
    new_lines = get("compress").section(compress_result())
    assert any("teacher cache" in line for line in new_lines)


def quant_result(dwq=True):
    modes = [{"mode": "fp32", "chat_ppl": 9.0, "en_ppl": 28.0},
             {"mode": "nvfp4", "chat_ppl": 13.0, "en_ppl": 40.0}]  # fmt: skip
    if dwq:
        modes.append({"mode": "nvfp4+dwq", "chat_ppl": 11.0, "en_ppl": 33.0,
                      "dwq": {"steps": 2, "samples": 16, "kl_first": 0.4, "kl_last": 0.3,
                              "seconds": 1.0}})  # fmt: skip
    for m in modes:
        m.update(bits_per_weight=4.5, mib=1.0, decode_tps=10.0, prefill_tps=100.0)
    return {"modes": modes}


def test_dwq_row_compares_with_round_to_nearest_directly():
    rows = quant_rows(quant_result())
    r = rows[-1]
    assert r["claim"].startswith("nvfp4+dwq (distilled scales) has lower held-out perplexity")
    assert (r["values"], r["other"], r["spread"]) == ([11.0], [13.0], "exact")
    assert r["verdict"] == "holds" and "13 → 11" in r["control"]
    worse = quant_result()
    worse["modes"][2]["chat_ppl"] = 14.0
    assert quant_rows(worse)[-1]["verdict"] == "does not hold"
    assert len(quant_rows(quant_result(dwq=False))) == 1  # old results: no DWQ rows


def test_header_lists_a_stages_knobs_only_when_its_result_ran_with_them(tmp_path):
    cfg = ReproConfig(budget="tiny")
    man = {"key": {"model": "m", "budget": "tiny"}}
    old = {"quant": {**quant_result(dwq=False), "rows": [], "seconds": 1.0}}
    head = render_report(cfg, man, old, tmp_path).splitlines()[2]
    assert "dwq_steps" not in head and "local_steps 2" in head  # compress did not run: listed
    new = {"quant": {**old["quant"], "budget": {"dwq_steps": 2}}}
    assert "dwq_steps 2" in render_report(cfg, man, new, tmp_path).splitlines()[2]
