"""The trainer: resume reproduces an uninterrupted run, NaN guard, accumulation, schedule, LoRA,
checkpoints that load in cherry-mlx and mlx-lm, config precedence, malformed data errors."""

import json
import math
from dataclasses import replace

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
import pytest
from _train_helpers import base_cfg, run, synth_batches

from cherry_mlx.models import build_model, load_model
from cherry_mlx.selection.select import make_loss
from cherry_mlx.training import TrainConfig, TrainingDiverged, resolve_config, train
from cherry_mlx.training.checkpoint import list_checkpoints
from cherry_mlx.training.data import load_splits, prepare_batch
from cherry_mlx.training.step import lr_schedule, make_step


def flat(model):
    from mlx.utils import tree_flatten

    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


@pytest.mark.parametrize("select", ["gt", "random"])
def test_resume_after_stop_reproduces_uninterrupted_run(tmp_path, tiny_config, select):
    full = run(base_cfg(tmp_path, name="full", select=select), tiny_config)
    part = run(base_cfg(tmp_path, name="part", select=select, stop_after=4), tiny_config)
    assert part.stopped_early and part.step == 4
    assert [c.name for c in list_checkpoints(part.run_dir)] == ["step-4"]
    # the CLI path: the run's saved settings are the base layer, minus the stop request
    cfg = resolve_config({"resume": str(part.run_dir)})
    assert (cfg.steps, cfg.select, cfg.stop_after, cfg.name) == (8, select, None, "part")
    resumed = run(cfg, tiny_config)
    assert resumed.step == 8
    losses_full = [r["loss"] for r in full.history]
    losses_resumed = [r["loss"] for r in resumed.history]  # metrics.jsonl: steps 1..4 + 5..8
    assert [r["step"] for r in resumed.history] == list(range(1, 9))
    np.testing.assert_allclose(losses_resumed, losses_full, rtol=1e-6)
    fa, fb = flat(full.model), flat(resumed.model)
    for k in fa:
        np.testing.assert_allclose(fa[k], fb[k], rtol=1e-5, atol=1e-7, err_msg=k)
    assert [e["step"] for e in resumed.evals] == [0, 4, 8]


def test_nan_guard_keeps_last_good_checkpoint(tmp_path, tiny_config):
    batches = synth_batches(6)
    batches[5]["level"] = batches[5]["level"].copy()
    batches[5]["level"][0, 0] = 9  # poison marker: the loss below turns NaN on this batch (step 6)
    base = make_loss("gt", 0.7)

    def poisoned(model, batch):
        loss, n = base(model, batch)
        return loss + mx.where((batch["level"] == 9).any(), mx.nan, 0.0), n

    cfg = base_cfg(tmp_path, save_every=2, report_every=2)
    with pytest.raises(TrainingDiverged, match="NaN/inf by step 6.*step-4"):
        run(cfg, tiny_config, loss_fn=poisoned, train_batches=batches)
    ckpts = list_checkpoints(tmp_path / "run")
    assert ckpts[-1].name == "step-4"
    model, _ = load_model(ckpts[-1])
    assert all(np.isfinite(v).all() for v in flat(model).values())
    assert json.loads((ckpts[-1] / "meta.json").read_text())["step"] == 4


def test_grad_accumulation_equals_one_big_batch(tiny_config):
    big = synth_batches(1, B=4, seed=3)[0]
    halves = [{k: v[:2] for k, v in big.items()}, {k: v[2:] for k, v in big.items()}]
    halves[1]["response"] = halves[1]["response"].copy()
    halves[1]["response"][:, :10] = False  # unequal token counts: a mean of means would differ
    big = {k: np.concatenate([halves[0][k], halves[1][k]]) for k in big}
    results = []
    for parts in ([big], halves):
        mx.random.seed(0)
        model = build_model(tiny_config)
        opt = optim.SGD(learning_rate=1.0)  # update = -gradient: compares gradients exactly
        loss_fn = make_loss("gt", 0.7)
        step, state = make_step(model, opt, loss_fn)
        acc = None
        for i, p in enumerate(parts):
            loss, n, acc, _ = step(prepare_batch(p, loss_fn)[0], acc, i == len(parts) - 1)
            mx.eval(state, loss, acc)
        results.append((loss.item(), flat(model)))
    assert abs(results[0][0] - results[1][0]) < 1e-5
    for k, v in results[0][1].items():
        np.testing.assert_allclose(v, results[1][1][k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_lr_schedule_by_hand():
    f = lr_schedule(1e-3, steps=12, warmup=2, min_ratio=0.1)
    assert math.isclose(f(0).item(), 0.5e-3, rel_tol=1e-6)
    assert math.isclose(f(1).item(), 1e-3, rel_tol=1e-6)
    assert math.isclose(f(2).item(), 1e-3, rel_tol=1e-6)
    assert math.isclose(
        f(7).item(), 1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5))), rel_tol=1e-5
    )
    assert math.isclose(f(12).item(), 1e-4, rel_tol=1e-5)


def test_checkpoint_contents_and_loads_in_mlx_lm(tmp_path, tiny_config):
    res = run(base_cfg(tmp_path, steps=4), tiny_config)
    step = res.run_dir / "checkpoints" / "step-4"
    for name in (
        "model.safetensors",
        "config.json",
        "optimizer.safetensors",
        "meta.json",
        "trainer_state.json",
        "train_config.json",
    ):
        assert (step / name).is_file(), name
    state = json.loads((step / "trainer_state.json").read_text())
    assert state["step"] == 4 and state["data"] == {"pos": 4}
    assert TrainConfig.from_file(step / "train_config.json").steps == 4
    assert (res.run_dir / "best" / "model.safetensors").is_file()
    # the tokenizer is copied into the run at its start and from there into every checkpoint
    own = (res.run_dir / "tokenizer" / "tokenizer.json").read_bytes()
    assert (step / "tokenizer.json").read_bytes() == own
    assert (res.run_dir / "curves.png").stat().st_size > 1000
    rows = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    from mlx_lm.utils import load_model as mlx_lm_load_model

    theirs, _ = mlx_lm_load_model(step)
    ours, _ = load_model(step)
    x = mx.array(synth_batches(1)[0]["inputs"])
    np.testing.assert_allclose(np.array(theirs(x)), np.array(res.model(x)), atol=1e-5)
    np.testing.assert_allclose(np.array(ours(x)), np.array(res.model(x)), atol=1e-5)


def test_lora_trains_adapters_and_saves_fused_model(tmp_path, tiny_config):
    res = run(
        base_cfg(tmp_path, steps=3, lora=True, lora_rank=4, save_every=3, learning_rate=1e-2),
        tiny_config,
    )
    from mlx.utils import tree_flatten

    trainable = [k for k, _ in tree_flatten(res.model.trainable_parameters())]
    assert trainable and all("lora_" in k for k in trainable)
    step = res.run_dir / "checkpoints" / "step-3"
    assert (step / "adapters.safetensors").is_file()
    fused, _ = load_model(step)  # a plain model: adapters fused into the weights
    x = mx.array(synth_batches(1)[0]["inputs"])
    np.testing.assert_allclose(np.array(fused(x)), np.array(res.model(x)), atol=5e-4, rtol=1e-3)


def test_grad_checkpoint_same_loss(tmp_path, tiny_config):
    a = run(base_cfg(tmp_path, name="a", steps=2, eval_every=0), tiny_config)
    b = run(base_cfg(tmp_path, name="b", steps=2, eval_every=0, grad_checkpoint=True), tiny_config)
    np.testing.assert_allclose(
        [r["loss"] for r in a.history], [r["loss"] for r in b.history], rtol=1e-5
    )


def test_config_precedence_cli_over_file_over_defaults(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 50\nlambda: 0.5\nlearning_rate: 0.01\n")
    cfg = resolve_config({"steps": 7, "lam": None}, f)
    assert (cfg.steps, cfg.lam, cfg.learning_rate, cfg.batch_size) == (7, 0.5, 0.01, 8)
    f.write_text("stpes: 3\n")
    with pytest.raises(ValueError, match="unknown training setting 'stpes'"):
        resolve_config({}, f)
    assert replace(cfg, steps=3).steps == 3


def test_malformed_data_errors(tmp_path):
    (tmp_path / "train.jsonl").write_text(
        '{"messages": [{"role": "user", "content": "hi"}]}\n{not json\n'
    )
    with pytest.raises(ValueError, match="train.jsonl"):
        load_splits(str(tmp_path), tokenizer=None, max_len=32)
    with pytest.raises(FileNotFoundError, match="train.jsonl"):
        load_splits(str(tmp_path / "missing"), tokenizer=None, max_len=32)
    with pytest.raises(ValueError, match="missing"):
        prepare_batch({"inputs": np.zeros((1, 4), np.int32)})


def test_resume_without_checkpoint_and_name_clash(tmp_path, tiny_config):
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        run(base_cfg(tmp_path, resume=str(tmp_path)), tiny_config)
    run(base_cfg(tmp_path, steps=2, save_every=2, eval_every=0), tiny_config)
    with pytest.raises(ValueError, match="--resume"):
        run(base_cfg(tmp_path, steps=2), tiny_config)


KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
import cherry_mlx, mlx.core as mx
from conftest import TINY
from _train_helpers import synth_batches, base_cfg
from cherry_mlx.models import build_model
from cherry_mlx.training import TrainCallback, train
from cherry_mlx.training.data import CycleBatches
from pathlib import Path

class Hang(TrainCallback):
    def on_checkpoint(self, step, path):
        if step == 4:
            print("checkpointed", flush=True)
            time.sleep(600)  # the parent kills us here

mx.random.seed(0)
cfg = base_cfg(Path({tmp!r}), name="killed")
train(cfg, model=build_model(dict(TINY)), train_data=CycleBatches(synth_batches(6)),
      valid_data=synth_batches(2, seed=99), callbacks=[Hang()])
"""


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path, tiny_config):
    """A real kill (SIGKILL mid-run), then --resume: the same losses as an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys

    script = KILL_SCRIPT.format(tests=os.path.dirname(__file__), tmp=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "checkpointed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    full = run(base_cfg(tmp_path, name="full"), tiny_config)
    resumed = run(resolve_config({"resume": str(tmp_path / "killed")}), tiny_config)
    np.testing.assert_allclose(
        [r["loss"] for r in resumed.history], [r["loss"] for r in full.history], rtol=1e-6
    )


def test_rho1_selection_trains_against_a_reference_checkpoint(tmp_path, tiny_config):
    ref = run(base_cfg(tmp_path, name="ref", steps=2, save_every=2, eval_every=0), tiny_config)
    res = run(
        base_cfg(
            tmp_path,
            name="rho",
            steps=2,
            eval_every=0,
            select="rho1",
            reference=str(ref.last_checkpoint),
        ),
        tiny_config,
    )
    assert all(np.isfinite(r["loss"]) for r in res.history)
    assert np.isfinite(res.evals[-1]["loss"])  # the objective on valid uses the reference too


def test_loss_breakdown_against_numpy(tiny_config):
    from cherry_mlx.training.data import valid_batches
    from cherry_mlx.training.evaluate import loss_breakdown

    model = build_model(tiny_config)
    raw = synth_batches(2, seed=5)
    ce, resp, gt, cat = [], [], [], []
    for b in raw:
        logits = np.array(model(mx.array(b["inputs"])), np.float64)  # (B, T, V)
        lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        ce.append(lse - np.take_along_axis(logits, b["targets"][..., None], -1)[..., 0])
        resp.append(b["response"])
        gt.append(b["level"] >= 1)
        cat.append(b["category"])
    ce, resp, gt, cat = (np.concatenate(x) for x in (ce, resp, gt, cat))
    for batches in (
        valid_batches(raw, 4, 24),
        [{k: mx.array(v) for k, v in b.items()} for b in raw],
    ):  # with and without ``pos``
        out = loss_breakdown(model, batches)
        assert abs(out["total"] - ce[resp].mean()) < 1e-4
        assert abs(out["gt"] - ce[resp & gt].mean()) < 1e-4
        assert abs(out["non_gt"] - ce[resp & ~gt].mean()) < 1e-4
        assert abs(out["per_category"]["reasoning"] - ce[resp & gt & (cat == 2)].mean()) < 1e-4
        assert out["counts"]["gt"] == int((resp & gt).sum())


def test_truncation_is_reported_not_silent(tmp_path, tiny_config, capfd):
    """An example longer than the context is truncated and the count is printed when training."""
    data = tmp_path / "data"
    data.mkdir()
    long_answer = "서울은 한국의 수도입니다. " * 40
    rows = [
        {"prompt": "한국의 수도는?", "completion": long_answer},
        {"prompt": "What is 2+2?", "completion": "It is 4."},
        {"text": "A short piece of prose."},
    ]
    (data / "train.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    )
    (data / "valid.jsonl").write_text(json.dumps(rows[1]) + "\n")
    cfg = base_cfg(tmp_path, steps=1, eval_every=1, save_every=1, data=str(data), seq_len=32)
    train(cfg, model=build_model({**tiny_config, "vocab_size": 4096}))
    err = capfd.readouterr().err
    assert "[data] train" in err and "truncated 1" in err
