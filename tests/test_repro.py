"""``cherry-mlx repro``: the verdict rule against hand-computed cases, training on shuffled
responses, resuming a killed repro at the stage it was in, and (slow) the whole tiny budget with
every report row filled and every verdict re-derived from the JSON by the stated rule."""

import dataclasses
import importlib
import json
import math
import re

import numpy as np
import pytest

from cherry_mlx.data.shuffle import response_runs
from cherry_mlx.evaluation.verdict import claim_row, judge
from cherry_mlx.pipelines import repro
from cherry_mlx.pipelines.config import ReproConfig
from cherry_mlx.pipelines.report import cell
from cherry_mlx.pipelines.stage import stages
from cherry_mlx.training.config import TrainConfig
from cherry_mlx.training.data import shuffled_examples

STAGES = ("sgt", "anchor", "compress", "loops", "mtp", "quant", "moee")
STAGES += ("ablate",)
STAGES += ("ssgt",)
STAGES += ("refine",)
STAGES += ("theorem3",)


def set_run(monkeypatch, name, run, rows=None):
    """Replace stage ``name``'s run (and rows) for this test, as its module declares it."""
    mod = importlib.import_module(f"cherry_mlx.pipelines.stages.{name}")
    new = dataclasses.replace(mod.STAGE, run=run, **({"rows": rows} if rows else {}))
    monkeypatch.setattr(mod, "STAGE", new)
    return mod.STAGE


def _given_rows(res):
    return res["rows"]


def test_verdict_rule_hand_computed():
    # a = [1, 3] (mean 2, var 2), b = [5, 7] (mean 6, var 2): se = sqrt(2/2 + 2/2) = sqrt(2),
    # Welch df = (1 + 1)² / (1/1 + 1/1) = 2, t*(2) = 0.95 / sqrt(2 · 0.975 · 0.025) = 4.303
    v = judge([5, 7], [1, 3])
    assert v["diff"] == pytest.approx(4) and v["se"] == pytest.approx(math.sqrt(2))
    assert v["df"] == pytest.approx(2) and v["t_crit"] == pytest.approx(4.3027, abs=1e-4)
    assert v["verdict"] == "inconclusive"  # 4 < 4.303 · 1.414 = 6.08 (2 se would say "holds")
    # three each, var 1: se = sqrt(2/3) = 0.816, df = (2/3)² / (2 · (1/3)² / 2) = 4, t* 2.776
    assert judge([5, 6, 7], [1, 2, 3])["verdict"] == "holds"  # 4 > 2.27
    assert judge([1, 2, 3], [5, 6, 7])["verdict"] == "does not hold"
    assert judge([1, 2, 3], [5, 6, 7], greater=False)["verdict"] == "holds"
    # threshold: [0.2, 0.3, 0.4] > 0: se = 0.1 / sqrt(3), df 2: 4.303 · 0.0577 = 0.248 < 0.3
    assert judge([0.2, 0.3, 0.4], threshold=0.0)["verdict"] == "holds"
    # [0.2, 0.4]: se 0.1, df 1, t* = tan(0.475π) = 12.71: 1.27 > 0.3
    assert judge([0.2, 0.4], threshold=0.0)["verdict"] == "inconclusive"
    # one value: no spread, inconclusive; unless the measurement is exact
    assert judge([10.0], threshold=0.0)["verdict"] == "inconclusive"
    assert judge([0.5], threshold=0.05, greater=False, exact=True)["verdict"] == "does not hold"
    assert judge([0.01], threshold=0.05, greater=False, exact=True)["verdict"] == "holds"
    assert judge([math.nan, math.nan], threshold=0.0)["verdict"] == "inconclusive"


def test_shuffled_examples_keep_each_turns_tokens():
    from cherry_mlx.data.encode import Encoded

    tokens = np.arange(12)
    response = np.array([0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1], bool)
    level = np.arange(12) % 3
    ex = Encoded(tokens=tokens, response=response, level=level, category=level.copy())
    (out,) = shuffled_examples([ex], seed=0)
    assert not np.array_equal(out.tokens, tokens)  # something moved
    np.testing.assert_array_equal(out.tokens[~response], tokens[~response])  # prompt in place
    for s, e in response_runs(response):
        assert sorted(out.tokens[s:e]) == list(range(s, e))
        # each token carries its own label along
        np.testing.assert_array_equal(out.level[s:e], level[out.tokens[s:e]])
    assert TrainConfig(shuffle_responses=True).shuffle_responses
    with pytest.raises(ValueError, match="encoded examples"):
        shuffled_examples(iter([]), seed=0)


def test_repro_config_errors():
    with pytest.raises(ValueError, match="--budget 'huge'"):
        ReproConfig(budget="huge")
    with pytest.raises(ValueError, match="--only bogus"):
        ReproConfig(only="sgt,bogus")
    assert ReproConfig(only="quant, sgt").stages == ("quant", "sgt")
    assert ReproConfig(seeds=3).n_seeds == 3


def test_budget_overrides_typed_and_checked():
    cfg = ReproConfig(budget="cpu", set="steps=12, seq_len=128,learning_rate=3e-5,eval_batches=-1")
    spec = cfg.spec
    assert (spec.steps, spec.seq_len, spec.eval_batches) == (12, 128, -1)
    assert spec.learning_rate == 3e-5 and isinstance(spec.steps, int)
    assert spec.heal_steps == 60  # untouched fields keep the cpu budget's values
    for bad, msg in [
        ("stepz=3", "use NAME=VALUE"),
        ("steps", "use NAME=VALUE"),
        ("steps=1.5", "steps takes an integer"),
        ("steps=0", "must be positive"),
        ("learning_rate=nan", "must be positive"),
        ("layouts=2", "use NAME=VALUE"),
    ]:
        with pytest.raises(ValueError, match=msg):
            ReproConfig(set=bad)


def test_killed_repro_resumes_at_the_unfinished_stage(tmp_path, monkeypatch):
    """Stage functions are faked (the real ones run in the slow test): a stage that raises leaves
    no results file; the rerun skips the finished stage and runs the killed one."""
    calls = []

    def fake(stage):
        def run(ctx):
            calls.append(stage)
            return {"rows": [claim_row("T", f"{stage} claim", "p", [1.0, 1.1], threshold=0.0)]}

        return run

    def boom(ctx):
        calls.append("quant")
        raise RuntimeError("killed")

    monkeypatch.setattr(repro, "_source", lambda cfg, out, log: tmp_path / "source")
    monkeypatch.setattr(repro, "build_context", lambda cfg, out, src: object())
    monkeypatch.setattr(repro, "write_report", lambda out, cfg, man, res: out / "report.md")
    set_run(monkeypatch, "sgt", fake("sgt"), _given_rows)
    set_run(monkeypatch, "quant", boom, _given_rows)
    cfg = ReproConfig(only="sgt,quant", out=str(tmp_path / "r"))
    with pytest.raises(RuntimeError, match="killed"):
        repro.run_repro(cfg, log=lambda *_: None)
    assert (tmp_path / "r/results/sgt.json").is_file()
    assert not (tmp_path / "r/results/quant.json").exists()
    set_run(monkeypatch, "quant", fake("quant"), _given_rows)
    results = repro.run_repro(cfg, log=lambda *_: None)
    assert calls == ["sgt", "quant", "quant"]
    assert set(results) == {"sgt", "quant"}
    saved = json.loads((tmp_path / "r/results.json").read_text())
    # [1, 1.1] > 0: d = 1.05, se = 0.0707 / sqrt(2) = 0.05, t*(df 1) = 12.71: 1.05 > 0.64
    assert saved["stages"]["quant"]["rows"][0]["verdict"] == "holds"
    with pytest.raises(ValueError, match="holds a repro made with"):
        repro.run_repro(ReproConfig(only="sgt", out=str(tmp_path / "r"), budget="cpu"))
    # another --set resumes (finished stages are kept); --redo reruns one and records its settings
    repro.run_repro(ReproConfig(only="sgt", out=str(tmp_path / "r"), set="steps=2"),
                    log=lambda *_: None)  # fmt: skip
    assert calls == ["sgt", "quant", "quant"]
    first = json.loads((tmp_path / "r/results/sgt.json").read_text())
    cfg = ReproConfig(only="sgt,quant", redo="sgt", out=str(tmp_path / "r"), set="steps=2")
    results = repro.run_repro(cfg, log=lambda *_: None)
    assert calls == ["sgt", "quant", "quant", "sgt"]
    assert results["sgt"]["set"] == {"steps": 2} and results["sgt"]["budget"]["steps"] == 2
    assert results["quant"]["set"] is None
    assert json.loads((tmp_path / "r/results/sgt.json.prev").read_text()) == first
    cfg = ReproConfig(only="sgt", redo="sgt", out=str(tmp_path / "r"), seeds=3)
    assert repro.run_repro(cfg, log=lambda *_: None)["sgt"]["n_seeds"] == 3
    with pytest.raises(ValueError, match="--redo moee: not among the stages"):
        ReproConfig(only="sgt", redo="moee")
    with pytest.raises(ValueError, match="--redo bogus: unknown stage"):
        ReproConfig(redo="bogus")


@pytest.mark.slow
def test_tiny_budget_end_to_end(tmp_path, monkeypatch):
    """``repro --budget tiny``: killed in its last stage, rerun, then every stage's rows are in
    the JSON and in report.md with the verdict the stated rule gives."""
    out = tmp_path / "repro"
    last = STAGES[-1]
    real = importlib.import_module(f"cherry_mlx.pipelines.stages.{last}").STAGE.run

    def killed(ctx):
        raise KeyboardInterrupt

    assert tuple(s.name for s in stages()) == STAGES  # the run order
    set_run(monkeypatch, last, killed)
    with pytest.raises(KeyboardInterrupt):
        repro.run_repro(ReproConfig(budget="tiny", out=str(out)), log=lambda *_: None)
    done = {p.stem for p in (out / "results").glob("*.json")}
    assert done == {"source", *STAGES} - {last}
    for stage in set(STAGES) - {last}:  # finished: must not run again
        set_run(monkeypatch, stage, killed)
    set_run(monkeypatch, last, real)
    results = repro.run_repro(ReproConfig(budget="tiny", out=str(out)), log=lambda *_: None)
    report = (out / "report.md").read_text()
    assert set(STAGES) <= set(results)
    for stage in STAGES:
        rows = results[stage]["rows"]
        assert rows, stage
        assert (out / f"{stage}.png").stat().st_size > 1000
        for r in rows:
            again = judge(r["values"], r["other"], r["threshold"], r["greater"], r["exact"])
            assert again["verdict"] == r["verdict"], r["claim"]
            line = next(x for x in report.splitlines() if f"| {cell(r['claim'])} |" in x)
            assert line.endswith(f"**{r['verdict']}** |")
    claims = " ".join(r["claim"] for s in STAGES for r in results[s]["rows"])
    for needed in ("ROI", "share reading", "W̃", "γ̄ > 0 at the source", "shuffled responses",
                   "random", "rho1", "prune-bi", "prune-angular", "looping", "speedup",
                   "nvfp4", "MoEE", "pure GT (λ 1)", "4L×2 (", "MoEE ladder",
                   "self_correction_rate", "hit@5", "Eq. 6's bound", "prune-bi+local+distill",
                   "average+local+distill", "prune-loop+local+distill", "nvfp4+dwq"):  # fmt: skip
        assert needed in claims, needed
    assert "n/a" not in re.findall(r"\| \*\*(.*?)\*\* \|", report)
    sgt = results["sgt"]
    assert set(sgt["arms"]) == {"sgt", "full", "random", "loss", "rho1", "shuffled",
                                "full_shuffled"}  # fmt: skip
    assert all("en" in r["eval"] and "ko" in r["eval"] for r in sgt["arms"]["sgt"])
    # one teacher cache per run, built by the compress stage: whole shards, every layer's state
    (cache,) = (out / "teacher-cache").iterdir()
    kd = results["compress"]["distill"]
    assert kd["cache"]["rows"] >= kd["e2e_steps"] * results["compress"]["budget"]["batch_size"]
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["hidden_layers"] == list(range(results["compress"]["depth"] + 1))
    dwq = next(m for m in results["quant"]["modes"] if m["mode"] == "nvfp4+dwq")
    assert dwq["dwq"]["steps"] == results["quant"]["budget"]["dwq_steps"]


NEW_STAGE = """
from cherry_mlx.evaluation.verdict import claim_row
from cherry_mlx.pipelines.stage import Stage


def run(ctx):
    return {"steps": ctx.cfg.knobs("extra")["extra_steps"], "loss": [2.0, 2.1]}


STAGE = Stage(
    name="extra", order=5, title="0. An extra stage", run=run,
    rows=lambda r: [claim_row("T0", "extra loss > 1", "1", r["loss"], threshold=1.0)],
    section=lambda r: [f"extra ran {r['steps']} steps"],
    plot=lambda r: (["extra"], [r["loss"]], "loss"),
    knobs={"extra_steps": {"tiny": 2, "cpu": 20, "paper": 200}},
)
"""


def test_a_new_stage_is_one_file(tmp_path, monkeypatch):
    """A stage package holding one more module: --only, --set on its knob, the runner, the
    results JSON and every part of the report pick it up with no other file changed."""
    import shutil
    import sys

    from cherry_mlx.pipelines import stage as registry

    pkg = tmp_path / "morestages"
    shutil.copytree(next(iter(importlib.import_module(registry.PACKAGE).__path__)), pkg,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    (pkg / "extra.py").write_text(NEW_STAGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "PACKAGE", "morestages")
    for name in [m for m in sys.modules if m.startswith("morestages")]:
        monkeypatch.delitem(sys.modules, name)
    assert [s.name for s in registry.stages()] == ["extra", *STAGES]
    monkeypatch.setattr(repro, "_source", lambda cfg, out, log: tmp_path / "source")
    monkeypatch.setattr(repro, "build_context", lambda cfg, out, src: type("C", (), {"cfg": cfg}))
    with pytest.raises(ValueError, match="extra_steps takes an integer"):
        ReproConfig(only="extra", set="extra_steps=1.5")
    out = tmp_path / "r"
    cfg = ReproConfig(only="extra", set="extra_steps=7", out=str(out))
    results = repro.run_repro(cfg, log=lambda *_: None)
    res = results["extra"]
    assert res["steps"] == 7 and res["budget"]["extra_steps"] == 7
    assert res["rows"][0]["verdict"] == "holds"  # [2, 2.1] > 1: d 1.05 > t*(1) 12.71 · se 0.05
    report = (out / "report.md").read_text()
    assert "## 0. An extra stage" in report and "extra ran 7 steps" in report
    assert "| extra | T0 | extra loss > 1 |" in report and "extra_steps 2" in report
    assert report.index("## 0. An extra stage") < report.index("## 1. SGT")
    assert (out / "extra.png").stat().st_size > 1000
