"""Memory of training and serving, measured against ``cherry-mlx info``'s plan.

Stages (each result saved to ``OUT/STAGE.json``; a rerun skips finished stages, ``--redo S``):

- ``calibrate``: MLX's allocation (``mx.get_peak_memory``) of one real training step (the trainer's
  compiled step, loss and optimizer) on small Llama shapes, split into weights, weights + optimizer
  update with a tiny batch, and the step at several batch shapes: the data the activation model of
  ``cherry_mlx/models/memory.py`` is fitted to.
- ``train:NAME``: ``cherry-mlx train ...`` in a subprocess on full-length batches; the run's
  ``metrics.jsonl`` peak (MLX and resident) against the plan's prediction.

    python bench/bench_memory.py calibrate
    flock /tmp/cherry-heavy.lock python bench/bench_memory.py train:1.8b   # minutes per step
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

import cherry_mlx  # noqa: F401  (fast BLAS before mlx)

OUT = Path("/tmp/memory/bench")


def synthetic_batch(B, T, V, seed=0):
    rng = np.random.default_rng(seed)
    toks = rng.integers(0, V, size=(B, T + 1)).astype(np.int32)
    return {
        "inputs": toks[:, :-1], "targets": toks[:, 1:],
        "response": np.ones((B, T), bool), "level": np.zeros((B, T), np.int8),
        "category": np.full((B, T), -1, np.int8),
    }  # fmt: skip


def measure_step(config: dict, B: int, T: int, ckpt=False, optimizer="adamw", steps=2):
    """MLX peak bytes of ``steps`` training steps of ``config`` at batch (B, T), by phase."""
    from cherry_mlx.models.loading import build_model
    from cherry_mlx.training.config import TrainConfig
    from cherry_mlx.training.data import prepare_batch
    from cherry_mlx.training.objective import make_objective
    from cherry_mlx.training.setup import _enable_checkpointing
    from cherry_mlx.training.step import make_optimizer, make_step

    gc.collect()
    mx.clear_cache()
    mx.reset_peak_memory()
    base = mx.get_active_memory()
    mx.random.seed(0)
    model = build_model(dict(config))
    mx.eval(model.parameters())
    weights = mx.get_active_memory() - base
    if ckpt:
        _enable_checkpointing(model)
    cfg = TrainConfig(select="all", optimizer=optimizer, steps=10, warmup=1)
    loss_fn = make_objective(cfg)
    opt = make_optimizer(cfg)
    step, state = make_step(model, opt, loss_fn, cfg.grad_clip)
    batch, _ = prepare_batch(synthetic_batch(B, T, config["vocab_size"]), loss_fn)
    peaks = []
    for _ in range(steps):
        mx.reset_peak_memory()
        loss, ntoks, acc, gnorm = step(batch, None, True)
        mx.eval(state, loss, ntoks, gnorm)
        peaks.append(mx.get_peak_memory() - base)
    after = mx.get_active_memory() - base
    del model, opt, step, state, batch
    gc.collect()
    mx.clear_cache()
    return {"weights": weights, "peaks": peaks, "after": after}


def shape(D, L, F, H, KV, V, tie=True, hd=None):
    return {
        "model_type": "llama", "hidden_size": D, "num_hidden_layers": L, "intermediate_size": F,
        "num_attention_heads": H, "num_key_value_heads": KV, "vocab_size": V,
        "tie_word_embeddings": tie, "rms_norm_eps": 1e-5, "head_dim": hd or D // H,
        "rope_theta": 10000.0,
    }  # fmt: skip


CAL = [  # (label, config, B, T, ckpt, optimizer)
    ("static", shape(256, 4, 512, 4, 4, 2048), 1, 16, False, "adamw"),
    ("static-sgd", shape(256, 4, 512, 4, 4, 2048), 1, 16, False, "sgd"),
    ("static-adafactor", shape(256, 4, 512, 4, 4, 2048), 1, 16, False, "adafactor"),
    ("a", shape(256, 4, 512, 4, 4, 2048), 4, 128, False, "sgd"),
    ("a-T256", shape(256, 4, 512, 4, 4, 2048), 4, 256, False, "sgd"),
    ("a-B8", shape(256, 4, 512, 4, 4, 2048), 8, 128, False, "sgd"),
    ("a-L8", shape(256, 8, 512, 4, 4, 2048), 4, 128, False, "sgd"),
    ("a-F", shape(256, 4, 1536, 4, 4, 2048), 4, 128, False, "sgd"),
    ("a-H8", shape(256, 4, 512, 8, 8, 2048), 4, 128, False, "sgd"),
    ("a-gqa", shape(256, 4, 512, 8, 2, 2048), 4, 128, False, "sgd"),
    ("a-D512", shape(512, 4, 512, 4, 4, 2048), 4, 128, False, "sgd"),
    ("a-V8k", shape(256, 4, 512, 4, 4, 8192), 4, 128, False, "sgd"),
    ("c", shape(256, 4, 512, 4, 4, 2048), 4, 128, True, "sgd"),
    ("c-L8", shape(256, 8, 512, 4, 4, 2048), 4, 128, True, "sgd"),
    ("c-T256", shape(256, 4, 512, 4, 4, 2048), 4, 256, True, "sgd"),
    ("c-F", shape(256, 4, 1536, 4, 4, 2048), 4, 128, True, "sgd"),
]


SMOL = dict(D=576, F=1536, H=9, KV=3, V=49152, tie=True, hd=64)
BIG = dict(D=1536, F=2560, H=12, KV=12, V=125440, tie=False, hd=128)


def _s(p, L):
    return shape(p["D"], L, p["F"], p["H"], p["KV"], p["V"], p["tie"], p["hd"])


CAL2 = [  # realistic widths: the per-layer slope from L vs 2L, with and without checkpointing
    ("smol-L2", _s(SMOL, 2), 8, 256, False, "sgd"),
    ("smol-L4", _s(SMOL, 4), 8, 256, False, "sgd"),
    ("smol-L8", _s(SMOL, 8), 8, 256, False, "sgd"),
    ("smol-L4-T128", _s(SMOL, 4), 16, 128, False, "sgd"),
    ("smol-L2-c", _s(SMOL, 2), 8, 256, True, "sgd"),
    ("smol-L8-c", _s(SMOL, 8), 8, 256, True, "sgd"),
    ("smol-L4-static", _s(SMOL, 4), 1, 16, False, "sgd"),
    ("smol-L4-static-adamw", _s(SMOL, 4), 1, 16, False, "adamw"),
    ("smol-L4-static-adafactor", _s(SMOL, 4), 1, 16, False, "adafactor"),
    ("big-L2", _s(BIG, 2), 1, 512, False, "sgd"),
    ("big-L4", _s(BIG, 4), 1, 512, False, "sgd"),
    ("big-L2-c", _s(BIG, 2), 1, 512, True, "sgd"),
    ("big-L4-c", _s(BIG, 4), 1, 512, True, "sgd"),
    ("big-L2-static", _s(BIG, 2), 1, 16, False, "sgd"),
    ("big-L2-c-adafactor", _s(BIG, 2), 1, 512, True, "adafactor"),
]


def calibrate(table=CAL):
    rows = {}
    for label, cfg, B, T, ck, opt in table:
        r = measure_step(cfg, B, T, ck, opt)
        rows[label] = {"config": cfg, "B": B, "T": T, "ckpt": ck, "optimizer": opt, **r}
        print(label, B, T, ck, opt, {k: (v if k != "config" else "") for k, v in r.items()})
    return rows


REPO = Path(__file__).resolve().parents[1]
WEIGHTS = Path("/tmp/memory/weights")  # random-init presets for the looped comparison
DATA = Path("/tmp/memory/longgt")  # full-length (>= 512 tokens) tagged prose: every batch full
SMOL = Path("/tmp/memory/smollm2")
C18 = json.loads((REPO / "weights/cherry-1.8b/config.json").read_text())
LOOPED = {"num_hidden_layers": 6, "recurrence": {"prelude": 1, "core": 4, "coda": 1, "loops": 8}}

# name -> (model argument, train flags, plan settings)
RUNS = {
    "tiny": ("--preset cherry-tiny", "--batch-size 2 --seq-len 128 --steps 2",
             dict(batch=2, seq=128, checkpoint=False, optimizer="adamw")),
    "1.8b": ("--preset cherry-1.8b", "--batch-size 1 --seq-len 512 --grad-checkpoint "
             "--optimizer adafactor --steps 3", dict(batch=1, seq=512, checkpoint=True,
                                                     optimizer="adafactor")),
    "smollm2": (f"--model {SMOL}", "--batch-size 8 --seq-len 256 --select all --steps 3",
                dict(batch=8, seq=256, checkpoint=False, optimizer="adamw")),
    "6Lx8-ckpt": ("--preset c18-6Lx8", "--batch-size 1 --seq-len 512 --grad-checkpoint "
                  "--optimizer adafactor --steps 2", dict(batch=1, seq=512, checkpoint=True,
                                                          optimizer="adafactor")),
    "34L-ckpt": ("--preset c18-34L", "--batch-size 1 --seq-len 512 --grad-checkpoint "
                 "--optimizer adafactor --steps 2", dict(batch=1, seq=512, checkpoint=True,
                                                         optimizer="adafactor")),
    "6Lx8": ("--preset c18-6Lx8", "--batch-size 1 --seq-len 512 --optimizer adafactor "
             "--steps 2", dict(batch=1, seq=512, checkpoint=False, optimizer="adafactor")),
}  # fmt: skip


LABELS = {
    "1.8b": "cherry-1.8b, 1 x 512, checkpointed, Adafactor",
    "smollm2": "SmolLM2-135M full, 8 x 256, AdamW",
    "6Lx8-ckpt": "6L x 8 looped (34 calls), checkpointed",
    "34L-ckpt": "34 distinct layers, checkpointed",
    "6Lx8": "6L x 8 looped, no checkpointing",
}


def make_presets():
    """``c18-6Lx8`` (cherry-1.8b's shape, 6 unique layers, P1 C4 Q1 x 8 = 34 calls) and
    ``c18-34L`` (the same 34 calls as distinct layers), beside the default preset's tokenizer."""
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    for name, cfg in (
        ("c18-6Lx8", {**C18, **LOOPED}),
        ("c18-34L", {**C18, "num_hidden_layers": 34}),
    ):
        (WEIGHTS / name).mkdir(exist_ok=True)
        (WEIGHTS / name / "config.json").write_text(json.dumps(cfg, indent=2))
    for entry in (REPO / "weights").iterdir():
        if not (WEIGHTS / entry.name).exists():
            os.symlink(entry, WEIGHTS / entry.name)


def _model_dir(name):
    """The folder of a RUNS entry's model (presets read from WEIGHTS, which holds them all)."""
    model = RUNS[name][0].split()[1]
    return SMOL if "smol" in name else WEIGHTS / model


def salvage(name):
    """A finished run's result from its metrics.jsonl (when the bench died after the run)."""
    from cherry_mlx.models.memory import GIB, config_shape

    runs = Path("/tmp/memory/runs")
    rows = [json.loads(x) for x in (runs / name / "metrics.jsonl").read_text().splitlines()]
    shape = config_shape(json.loads((_model_dir(name) / "config.json").read_text()))
    return {
        "argv": "(salvaged)", "step_s": [r["step_s"] for r in rows],
        "loss": [r["loss"] for r in rows],
        "mlx_peak_gib": max(r["peak_mib"] for r in rows) * 2**20 / GIB,
        "rss_peak_gib": max(r["rss_peak_mib"] for r in rows) * 2**20 / GIB,
        "params": shape.params, "calls": shape.calls,
    }  # fmt: skip


def run_train(name):
    """``cherry-mlx train`` in a subprocess; peaks from its metrics.jsonl beside the plan."""
    from cherry_mlx.models.loading import load_config
    from cherry_mlx.models.memory import GIB, config_shape, plan_training

    model, flags, plan_kw = RUNS[name]
    make_presets()
    if name == "smollm2" and not (SMOL / "config.json").is_file():
        subprocess.run([sys.executable, "-m", "cherry_mlx_cli.main", "import", "smollm2-135m",
                        "-o", str(SMOL)], check=True)  # fmt: skip
    runs = Path("/tmp/memory/runs")
    shutil.rmtree(runs / name, ignore_errors=True)
    tok = [] if "smol" in name else ["--tokenizer", str(REPO / "weights/cherry-48l")]
    argv = [sys.executable, "-m", "cherry_mlx_cli.main", "train", *model.split(), *flags.split(),
            "--data", str(DATA), *tok, "--runs-dir", str(runs), "--name", name,
            "--eval-batches", "1", "--eval-every", "0", "--no-demo",
            "--keep-checkpoints", "1"]  # fmt: skip
    env = {**os.environ, "CHERRY_MLX_WEIGHTS": str(WEIGHTS), "PYTHONPATH": str(REPO)}
    t0 = time.time()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    print(proc.stderr[-3000:])
    if proc.returncode:
        raise SystemExit(f"{name}: train failed ({proc.returncode})")
    rows = [json.loads(x) for x in (runs / name / "metrics.jsonl").read_text().splitlines()]
    shape = config_shape(load_config(_model_dir(name)))
    plan = plan_training(shape, dtype="float32", device="cpu", **plan_kw)
    peak = max(r["peak_mib"] for r in rows) * 2**20
    rss = max(r["rss_peak_mib"] for r in rows) * 2**20
    out = {
        "argv": " ".join(argv[2:]), "wall_s": wall, "step_s": [r["step_s"] for r in rows],
        "loss": [r["loss"] for r in rows], "mlx_peak_gib": peak / GIB, "rss_peak_gib": rss / GIB,
        "plan_peak_gib": plan.peak / GIB,
        "plan_rows_gib": {k: v / GIB for k, v in plan.rows.items()},
        "plan_over_mlx": plan.peak / peak, "params": shape.params, "calls": shape.calls,
        "final_line": [ln for ln in proc.stderr.splitlines() if ln.startswith("peak memory")],
    }  # fmt: skip
    shutil.rmtree(runs / name / "checkpoints", ignore_errors=True)  # GBs of random weights
    if name != "1.8b":  # its best/ is quantised to NVFP4 for the serving measurement
        shutil.rmtree(runs / name / "best", ignore_errors=True)
    print(json.dumps(out, indent=1))
    return out


SERVE_SCRIPT = """
import json, resource, sys, time
import cherry_mlx
import mlx.core as mx
from cherry_mlx.decoding.session import generate_text, load_for_serving
model, tok = load_for_serving(sys.argv[1])
weights = mx.get_active_memory()
# a random-init cherry-1.8b has 125,440 logits but the shipped tokenizer 4,096 ids: sample only
# ids the tokenizer can print (an id past it crashes mlx-lm's detokenizer)
n_tok = len(tok._tokenizer)
keep = mx.arange(model.args.vocab_size) < n_tok
full_logits = model.logits
model.logits = lambda h: mx.where(keep, full_logits(h), -1e9)
t0 = time.time()
text, stats = "", None
for piece, stats in generate_text(model, tok, "서울의 인구는? Answer briefly.", max_tokens=64):
    text += piece
print(json.dumps({"weights_gib": weights / 2**30, "mlx_peak_gib": mx.get_peak_memory() / 2**30,
                  "rss_peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "text": text, "wall_s": time.time() - t0,
                  "tokens": stats.generated if stats else None}))
"""


def run_serve(name):
    """Quantise the 1.8b run's weights to NVFP4, chat one turn, measure; plan beside it."""
    from cherry_mlx.models.loading import load_config
    from cherry_mlx.models.memory import GIB, config_shape, plan_serving

    src, out = Path("/tmp/memory/runs/1.8b/best"), Path("/tmp/memory/c18-nvfp4")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if not (out / "config.json").is_file():
        q = [sys.executable, "-m", "cherry_mlx_cli.main", "quantize", str(src), "--mode", "nvfp4",
             "--eval-batches", "0", "-o", str(out), "--force"]  # fmt: skip
        subprocess.run(q, env=env, check=True)
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-c", SERVE_SCRIPT, str(out)], env=env,
                          capture_output=True, text=True)  # fmt: skip
    print(proc.stderr[-2000:])
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    shape = config_shape(load_config(src))
    plan = plan_serving(shape, 1, 128, "nvfp4", device="cpu")
    res.update(wall_total_s=time.time() - t0, plan_peak_gib=plan.peak / GIB,
               plan_rows_gib={k: v / GIB for k, v in plan.rows.items()})  # fmt: skip
    print(json.dumps(res, indent=1, ensure_ascii=False))
    return res


def report():
    """Measured peaks of every finished train/serve stage beside the current plan (no lock
    needed: nothing is trained)."""
    from cherry_mlx.models.loading import load_config, resolve
    from cherry_mlx.models.memory import GIB, config_shape, plan_serving, plan_training

    os.environ["CHERRY_MLX_WEIGHTS"] = str(WEIGHTS)
    make_presets()
    lines = ["| run | params | block calls | s/step | MLX peak | resident peak | plan "
             "| plan / MLX |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    out = {}
    for name, (model, _, plan_kw) in RUNS.items():
        f = OUT / f"train-{name}.json"
        if name == "tiny" or not f.is_file():
            continue
        r = json.loads(f.read_text())["result"]
        plan = plan_training(config_shape(load_config(_model_dir(name))), dtype="float32",
                             device="cpu", **plan_kw)  # fmt: skip
        ratio = plan.peak / GIB / r["mlx_peak_gib"]
        steps = r["step_s"][1:] or r["step_s"]
        out[name] = {"plan_gib": plan.peak / GIB, "ratio": ratio, **r}
        lines.append(
            f"| {LABELS.get(name, name)} | {r['params'] / 1e9:.2f}B | {r['calls']} "
            f"| {sum(steps) / len(steps):.1f} "
            f"| {r['mlx_peak_gib']:.2f} GiB | {r['rss_peak_gib']:.2f} GiB "
            f"| {plan.peak / GIB:.2f} GiB | {ratio:.3f} |"
        )
    f = OUT / "serve-1.8b-nvfp4.json"
    if f.is_file():
        r = json.loads(f.read_text())["result"]
        shape = config_shape(load_config(resolve("cherry-1.8b")))
        plan = plan_serving(shape, 1, 128, "nvfp4", device="cpu")
        out["serve"] = {"plan_gib": plan.peak / GIB, **r}
        lines.append(
            f"| cherry-1.8b NVFP4, chat turn | 1.40B | 48 | - | {r['mlx_peak_gib']:.2f} GiB "
            f"| {r['rss_peak_gib']:.2f} GiB | {plan.peak / GIB:.2f} GiB "
            f"| {plan.peak / GIB / r['mlx_peak_gib']:.3f} |"
        )
    print("\n".join(lines))
    return {"table": lines, "runs": out}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stages", nargs="+")
    ap.add_argument("--redo", action="append", default=[])
    a = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    for st in a.stages:
        path = OUT / f"{st.replace(':', '-')}.json"
        if path.is_file() and st not in a.redo and st != "report":
            print(f"{st}: done ({path})")
            continue
        t0 = time.time()
        if st.startswith("salvage:"):
            st = "train:" + st.split(":", 1)[1]
            path = OUT / f"{st.replace(':', '-')}.json"
            res = salvage(st.split(":", 1)[1])
        elif st == "report":
            res = report()
        elif st.startswith("serve:"):
            res = run_serve(st.split(":", 1)[1])
        elif st.startswith("train:"):
            res = run_train(st.split(":", 1)[1])
        else:
            res = {"calibrate": calibrate, "calibrate2": lambda: calibrate(CAL2)}[st]()
        path.write_text(json.dumps({"stage": st, "wall_s": time.time() - t0, "result": res}))
        print(f"{st}: {time.time() - t0:.0f} s -> {path}")


if __name__ == "__main__":
    sys.exit(main())
