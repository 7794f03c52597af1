"""``cherry-mlx eval`` plumbing: baseline / matched-step resolution, the table, JSON and plot."""

import json
import math

import mlx.core as mx
import pytest
from _wave_helpers import BASE, FULL, SGT, batch
from mlx.utils import tree_map

from cherry_mlx.evaluation.measure import (
    EvalConfig,
    EvalResult,
    checkpoint_step,
    default_baseline,
    json_clean,
    measure,
    resolve_full,
    resolve_target,
    step_checkpoint,
)
from cherry_mlx.evaluation.wave_table import format_result, plot_result
from cherry_mlx.models import build_model, save_model


def save_step(run, step, cfg, scale=1.0):
    model = build_model(cfg)
    mx.eval(model.parameters())
    if scale != 1.0:
        model.update(tree_map(lambda p: p * scale, model.parameters()))
    out = save_model(model, run / "checkpoints" / f"step-{step}", cfg)
    (out / "meta.json").write_text(json.dumps({"step": step}))
    return out


def test_resolution(tmp_path, tiny_config):
    run, full = tmp_path / "sgt", tmp_path / "full"
    for s in (0, 10, 20):
        save_step(run, s, tiny_config)
    save_step(full, 20, tiny_config)
    t = resolve_target(str(run))  # a run stands for its latest step (no best/)
    assert t.path.name == "step-20" and t.run == run and t.step == 20
    assert default_baseline(t) == run / "checkpoints" / "step-0"
    assert resolve_full(str(full), 20) == full / "checkpoints" / "step-20"
    with pytest.raises(ValueError, match=r"no checkpoint at step 10 \(kept: \[20\]\)"):
        resolve_full(str(full), 10)
    assert checkpoint_step(step_checkpoint(run, 10)) == 10
    # A run's best/ (trainer layout: meta.json {"best": {"step": N}}) stands for its step N.
    best = save_model(build_model(tiny_config), run / "best", tiny_config)
    (best / "meta.json").write_text(json.dumps({"best": {"step": 10, "total": 1.0}}))
    t = resolve_target(str(run))
    assert t.path == best and t.step == 10
    assert resolve_full(str(run), t.step) == run / "checkpoints" / "step-10"
    # A fine-tune without step-0 falls back to the model it started from.
    ft = tmp_path / "ft"
    save_step(ft, 5, tiny_config)
    (ft / "train_config.json").write_text(json.dumps({"model": str(run / "checkpoints/step-0")}))
    assert default_baseline(resolve_target(str(ft))) == run / "checkpoints" / "step-0"
    (ft / "train_config.json").unlink()
    with pytest.raises(ValueError, match="--baseline"):
        default_baseline(resolve_target(str(ft)))


def test_measure_table_json_plot(tmp_path):
    sec = measure(SGT, [batch()], level=1, base=BASE, full=FULL)
    m = sec.wave.metrics()
    assert m["W"] == pytest.approx(2.0, rel=1e-5)  # hand values in _wave_helpers.py
    assert m["R"] == pytest.approx(0.8 / 1.44, rel=1e-5)
    res = EvalResult(model="m", step=20, baseline="b", full="f", level="gt")
    res.sections["coherent"] = sec
    text = format_result(res)
    assert "W (Eq.3) = 2.000" in text and "W~ (Eq.4) = 0.667" in text
    assert f"ROI = {0.8 / 1.44 / 0.4:.3f}" in text
    d = json.loads(json.dumps(json_clean(res.to_dict())))
    assert d["coherent"]["W"] == pytest.approx(2.0, rel=1e-5)
    assert d["coherent"]["delta"]["non_gt"] == pytest.approx(1.0, rel=1e-5)
    assert json_clean({"a": [math.nan, 1.0]}) == {"a": [None, 1.0]}
    png = plot_result(res, str(tmp_path / "w.png"))
    assert (tmp_path / "w.png").stat().st_size > 1000 and png.endswith("w.png")


def test_coupling_section(tiny_config):
    from _wave_helpers import make_batch

    model = build_model(tiny_config)
    mx.eval(model.parameters())
    sec = measure(model, [make_batch()], level=1, coupling=True)
    c = sec.coupling
    assert c["gamma"] == pytest.approx(c["dot"] / c["gt_norm2"])
    assert len(c["checks"]) == 3 and "Theorem 3" in format_result(
        EvalResult("m", None, None, None, "gt", {"coherent": sec})
    )


def test_config_errors():
    with pytest.raises(ValueError, match="--level"):
        EvalConfig(level="mega")
    with pytest.raises(ValueError, match="--categories 'facts'"):
        EvalConfig(categories=["facts"])
    # --max-batches 0 used to surface as "valid.jsonl gave no batches" (blaming the data).
    for bad in (0, -2):
        with pytest.raises(ValueError, match=f"--max-batches {bad}: use N >= 1, or -1"):
            EvalConfig(max_batches=bad)
    with pytest.raises(ValueError, match="--coupling-batches 0"):
        EvalConfig(coupling_batches=0)


def write_data(path, n=6):
    """Chat examples with a GT span (the capital) on each answer."""
    rows = []
    for i in range(n):
        city = ["서울", "Paris", "Tokyo"][i % 3]
        answer = f"The capital is {city}. It has many people and old streets."
        start = answer.index(city)
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"Question {i}: what is the capital?"},
                    {
                        "role": "assistant",
                        "content": answer,
                        "gt": [
                            {
                                "start": start,
                                "end": start + len(city),
                                "level": 1,
                                "category": "factual",
                            }
                        ],
                    },
                ]
            }
        )
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def test_run_eval_end_to_end(tmp_path, tiny_config):
    """A from-scratch 'run' (no step-0 checkpoint) and a full-sequence run, through run_eval."""
    from cherry_mlx.evaluation.measure import InitOf, run_eval
    from cherry_mlx.models.loading import WEIGHTS_DIR

    tok = WEIGHTS_DIR / "cherry-tiny"
    cfg = dict(tiny_config, vocab_size=4096)
    (tmp_path / "weights").mkdir()
    preset = tmp_path / "weights" / "p"
    run, full = tmp_path / "sgt", tmp_path / "full"
    for r, scale in ((run, 0.5), (full, 0.25)):
        (r / "checkpoints").mkdir(parents=True)
        mx.random.seed(7)
        m = build_model(cfg)
        mx.eval(m.parameters())
        m.update(tree_map(lambda p: p * scale, m.parameters()))
        save_model(m, r / "checkpoints" / "step-3", cfg, tokenizer_dir=tok)
        (r / "checkpoints" / "step-3" / "meta.json").write_text('{"step": 3}')
    save_model(build_model(cfg), preset, cfg)
    (run / "train_config.json").write_text(json.dumps({"preset": str(preset), "seed": 7}))
    data = write_data(tmp_path / "valid.jsonl")
    res = run_eval(
        EvalConfig(
            model=str(run),
            full_run=str(full),
            data=str(data),
            batch_size=4,
            seq_len=64,
            coupling=True,
            shuffled=True,
            json_out=str(tmp_path / "e.json"),
        )
    )
    assert res.step == 3 and res.full.endswith("step-3")
    assert "init of" in res.baseline
    # Independent reference for the baseline: the seeded init rebuilt by hand.
    mx.random.seed(7)
    ref = build_model(cfg)
    mx.eval(ref.parameters())
    got = InitOf(run, str(preset), 7).build()
    assert mx.array_equal(ref.model.embed_tokens.weight, got.model.embed_tokens.weight).item()
    coh = res.sections["coherent"]
    assert coh.wave.now.n_gt > 0 and coh.wave.now.n_non_gt > coh.wave.now.n_gt
    # Shuffling keeps the token counts of each class.
    sh = res.sections["shuffled"]
    assert (sh.wave.now.n_gt, sh.wave.now.n_total) == (coh.wave.now.n_gt, coh.wave.now.n_total)
    assert sh.wave.now.total != pytest.approx(coh.wave.now.total, rel=1e-6)
    d = json.loads((tmp_path / "e.json").read_text())
    assert set(d) >= {"coherent", "shuffled", "notes"} and d["coherent"]["coupling"]["checks"]
    assert (run / "eval_wave.png").is_file()


def test_default_target_is_newest_trained_run(tmp_path, tiny_config, monkeypatch):
    import os

    import cherry_mlx.models.runs as runs_mod

    monkeypatch.setattr(runs_mod, "RUNS_DIR", tmp_path)
    save_step(tmp_path / "older", 5, tiny_config)
    (tmp_path / "experiment" / "arm").mkdir(parents=True)  # a folder of runs, no checkpoint
    os.utime(tmp_path / "older", (1, 1))
    t = resolve_target(None)
    assert t.run == tmp_path / "older" and t.step == 5


def test_init_check_uses_the_trainers_eval_batches(tmp_path, tiny_config):
    """The rebuilt-init check compares with the trainer's step-0 eval on the trainer's own
    held-out batches (its batch size, length and eval_batches), not on this eval's batches: a
    faithful rebuild must read "reproduces" whatever --batch-size / --max-batches the user picks."""
    from cherry_mlx.evaluation.measure import InitOf, heldout_batches, run_eval
    from cherry_mlx.evaluation.wave import split_losses
    from cherry_mlx.models.loading import WEIGHTS_DIR, load_tokenizer

    tok = WEIGHTS_DIR / "cherry-tiny"
    cfg = dict(tiny_config, vocab_size=4096)
    (tmp_path / "weights").mkdir()
    preset = tmp_path / "weights" / "p"
    save_model(build_model(cfg), preset, cfg)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_model(build_model(cfg), run / "checkpoints" / "step-3", cfg, tokenizer_dir=tok)
    (run / "checkpoints" / "step-3" / "meta.json").write_text('{"step": 3}')
    data = write_data(tmp_path / "valid.jsonl", n=12)
    trainer = {"preset": str(preset), "seed": 7, "data": str(data), "batch_size": 2,
               "seq_len": 64, "eval_batches": 1}  # fmt: skip
    (run / "train_config.json").write_text(json.dumps(trainer))
    # The trainer's step-0 row: the init on its first batch of 2 examples.
    init = InitOf(run, str(preset), 7)
    ref_cfg = EvalConfig(data=str(data), batch_size=2, seq_len=64, max_batches=1)
    ref = split_losses(init.build(), heldout_batches(ref_cfg, load_tokenizer(tok)))
    (run / "evals.jsonl").write_text(json.dumps({"step": 0, "total": ref.total}) + "\n")
    res = run_eval(EvalConfig(model=str(run), data=str(data), batch_size=4, seq_len=64))
    assert res.sections["coherent"].wave.base.total != pytest.approx(ref.total, rel=1e-4)
    note = res.notes[-1]
    assert "reproduces" in note and "DOES NOT" not in note, note
    assert "1 held-out batches of 2x64" in note
    # A rebuild that does not match (another seed) is still reported.
    (run / "train_config.json").write_text(json.dumps({**trainer, "seed": 8}))
    res = run_eval(EvalConfig(model=str(run), data=str(data), batch_size=4, seq_len=64))
    assert "DOES NOT reproduce" in res.notes[-1]
