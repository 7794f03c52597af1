"""Data-parallel training: tokens/s on 1 vs 2 local ranks, and the all-reduce time per step.

For each model (cherry-tiny, and a ~50M-parameter Llama defined here) the same global batch is
trained with the trainer's compiled step (``make_step(..., group)``) on one process, then on two
ranks started by ``mlx.launch -n 2 --backend ring`` (each rank computes half the batch and the
gradients are summed over TCP). A second measurement times the gradient all-reduce alone
(``average_gradients`` of a gradient-sized tree, what the step does on top of the compute).

On one machine with 2 CPU cores two ranks share the cores the single rank already used, so this
measures the *overhead* of going distributed (communication, duplicated host work), not a
speedup; speedup needs ranks with their own compute (two Macs over Thunderbolt). Wall times on a
machine shared with other jobs swing widely, so the table also gives the CPU seconds of a step
summed over the ranks, which other jobs do not inflate.

    python bench/bench_distributed.py               # a few minutes on 2 idle cores
    python bench/bench_distributed.py --steps 6 --models tiny
"""
# ruff: noqa: I001  (cherry_mlx must be imported before mlx: it loads the fast BLAS)

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("CHERRY_MLX_QUIET", "1")

import cherry_mlx  # noqa: E402,F401  (fast BLAS before mlx)
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# ~50M parameters: 14 blocks of 3.2M (attention 4·512², SwiGLU 3·512·1408) + a tied 8192x512 table
MODEL_50M = dict(
    model_type="llama",
    hidden_size=512,
    num_hidden_layers=14,
    intermediate_size=1408,
    num_attention_heads=8,
    num_key_value_heads=8,
    rms_norm_eps=1e-5,
    vocab_size=8192,
    max_position_embeddings=512,
    tie_word_embeddings=True,
)
MODELS = {"tiny": "cherry-tiny", "50m": MODEL_50M}


def model_config(name):
    from cherry_mlx.models.loading import load_config, resolve

    spec = MODELS[name]
    return dict(spec) if isinstance(spec, dict) else load_config(resolve(spec))


def batches(n, B, T, vocab, seed=0):
    """Chat-like synthetic batches: the first quarter prompt, the rest response, ~15% GT."""
    r = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        toks = r.integers(4, vocab, (B, T + 1)).astype(np.int32)
        resp = np.zeros((B, T), bool)
        resp[:, T // 4 :] = True
        level = ((r.random((B, T)) < 0.15) & resp).astype(np.int8)
        cat = np.where(level > 0, 0, -1).astype(np.int8)
        out.append(dict(inputs=toks[:, :-1], targets=toks[:, 1:], response=resp, level=level))
        out[-1]["category"] = cat
    return out


def global_counts_f(ranks, *values):
    if ranks.size == 1:
        return values
    return tuple(mx.distributed.all_sum(mx.array(values), group=ranks.group).tolist())


def worker(args) -> None:
    """One rank: timed training steps, then timed gradient all-reduces; rank 0 prints JSON."""
    from mlx.nn.utils import average_gradients
    from mlx.utils import tree_flatten, tree_map

    from cherry_mlx.models.loading import build_model
    from cherry_mlx.selection.select import make_loss
    from cherry_mlx.training.config import TrainConfig
    from cherry_mlx.training.data import CycleBatches, prepare_batch
    from cherry_mlx.training.distributed import barrier, current_ranks, shard_iterator
    from cherry_mlx.training.step import make_optimizer, make_step

    ranks = current_ranks()
    cfg = model_config(args.model)
    mx.random.seed(0)
    model = build_model(cfg)
    mx.eval(model.parameters())
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    loss_fn = make_loss("gt", 0.7, 1)
    data = CycleBatches(batches(4, args.batch, args.seq, cfg["vocab_size"]))
    it = shard_iterator(data, ranks)
    optimizer = make_optimizer(TrainConfig(steps=1000, warmup=10, learning_rate=1e-4))
    step, state = make_step(model, optimizer, loss_fn, 1.0, group=ranks.group)
    times, cpu = [], []
    for i in range(args.warmup + args.steps):
        batch, _ = prepare_batch(next(it), loss_fn)
        barrier(ranks)  # every rank starts the step together: the time is the step's own
        t0, c0 = time.perf_counter(), time.process_time()
        loss, ntoks, _, _ = step(batch, None, True)
        mx.eval(state, loss, ntoks)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    # CPU seconds of a step summed over the ranks: unlike wall time, not inflated by other
    # processes sharing the cores, so it shows what distribution itself costs
    (cpu_s,) = global_counts_f(ranks, float(np.median(cpu)))
    reduce_s = 0.0
    if ranks.size > 1:  # the gradient all-reduce alone, on a tree shaped like the gradients
        grads = tree_map(lambda p: mx.ones_like(p), model.trainable_parameters())
        mx.eval(grads)
        reps = []
        for _ in range(args.steps):
            barrier(ranks)
            t0 = time.perf_counter()
            mx.eval(average_gradients(grads, ranks.group))
            reps.append(time.perf_counter() - t0)
        reduce_s = float(np.median(reps))
    step_s = float(np.median(times))
    if ranks.main:
        print(
            "RESULT "
            + json.dumps(
                dict(
                    model=args.model,
                    ranks=ranks.size,
                    params=n_params,
                    step_s=step_s,
                    tok_s=args.batch * args.seq / step_s,
                    allreduce_s=reduce_s,
                    cpu_s=cpu_s,
                    grad_mb=4 * n_params / 2**20,
                )
            ),
            flush=True,
        )
    barrier(ranks)


def run(args, model: str, n: int) -> dict:
    own = [
        str(Path(__file__).resolve()),
        "--worker",
        "--model",
        model,
        *("--batch", str(args.batch), "--seq", str(args.seq)),
        *("--steps", str(args.steps), "--warmup", str(args.warmup)),
    ]
    cmd = [sys.executable, *own]
    if n > 1:
        cmd = ["mlx.launch", "-n", str(n), "--backend", "ring", *cmd]
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    if n > 1:  # ranks on one host split its cores: OpenBLAS threads spin, oversubscribing is slow
        env.setdefault("OPENBLAS_NUM_THREADS", str(max(1, (os.cpu_count() or n) // n)))
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="tiny,50m", help="comma-separated: tiny, 50m")
    ap.add_argument("--batch", type=int, default=8, help="global batch (split over the ranks)")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="tiny", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    print(
        f"global batch {args.batch} x {args.seq} tokens, median of {args.steps} steps; "
        f"{os.cpu_count()} CPU cores shared by all local ranks: this measures the overhead of "
        "2 ranks, not a speedup"
    )
    print(
        f"{'model':<6} {'params':>7} {'ranks':>5} {'step s':>7} {'tok/s':>8} "
        f"{'vs 1 rank':>9} {'CPU s/step':>10} {'all-reduce s':>12} {'of step':>7} {'grad MB':>7}"
    )
    for model in args.models.split(","):
        base = None
        for n in (1, 2):
            r = run(args, model, n)
            base = base or r["tok_s"]
            share = r["allreduce_s"] / r["step_s"]
            print(
                f"{model:<6} {r['params'] / 1e6:>6.1f}M {n:>5} {r['step_s']:>7.3f} "
                f"{r['tok_s']:>8.0f} {r['tok_s'] / base:>8.2f}x {r['cpu_s']:>10.3f} "
                f"{r['allreduce_s']:>12.4f} "
                f"{share:>6.0%} {r['grad_mb']:>7.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
