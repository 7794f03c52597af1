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
import sys
import time
from pathlib import Path

import cherry_mlx  # noqa: F401  (fast BLAS before mlx)
import mlx.core as mx
import numpy as np

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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stages", nargs="+")
    ap.add_argument("--redo", action="append", default=[])
    a = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    for st in a.stages:
        path = OUT / f"{st.replace(':', '-')}.json"
        if path.is_file() and st not in a.redo:
            print(f"{st}: done ({path})")
            continue
        t0 = time.time()
        res = {"calibrate": calibrate, "calibrate2": lambda: calibrate(CAL2)}[st]()
        path.write_text(json.dumps({"stage": st, "wall_s": time.time() - t0, "result": res}))
        print(f"{st}: {time.time() - t0:.0f} s -> {path}")


if __name__ == "__main__":
    sys.exit(main())
