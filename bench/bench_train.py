"""Training throughput and peak memory: our trainer vs mlx-lm's own, side by side in one process.

Same model (the cherry-tiny preset, random init), same synthetic chat-like batches (a prompt of
``--prompt`` tokens, the rest response, ~15% of response tokens tagged GT), same batch size,
AdamW, compiled steps in both. Rows:

    mlx-lm     mlx_lm.tuner.trainer.train with its default_loss (prompt masked via offsets)
    ours full  our train() with --select all (plain response-token cross-entropy)
    ours SGT   our train() with the SGT loss, λ 0.7 (the default)
    ours SGT, all logits   the same without restricting logits to response positions

Tokens/s counts every input token (B·T) per second over the steps after the first report
window (compilation excluded), for every row alike. MFU is model FLOPs per second (6·N per token for
the matmul parameters including the LM head, plus 6·L·T·D for causal attention) over the measured
fp32 matmul throughput of this machine. Figures vary ~25% between processes, so only
the ratios within one run mean anything.

    python bench/bench_train.py                  # ~2 minutes on 2 cores
    python bench/bench_train.py --steps 24 --batch 16
"""
# ruff: noqa: I001  (cherry_mlx must be imported before mlx: it loads the fast BLAS)

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("CHERRY_MLX_QUIET", "1")

import cherry_mlx  # noqa: E402,F401  (fast BLAS before mlx)
import mlx.core as mx  # noqa: E402
import mlx.optimizers as optim  # noqa: E402
import numpy as np  # noqa: E402

from cherry_mlx.models.loading import build_model, load_config, resolve  # noqa: E402
from cherry_mlx.training import TrainCallback, TrainConfig, train  # noqa: E402
from cherry_mlx.training.data import CycleBatches  # noqa: E402


def make_data(n_batches, B, T, prompt, vocab, seed=0):
    r = np.random.default_rng(seed)
    ours, seqs = [], []
    for _ in range(n_batches):
        toks = r.integers(4, vocab, (B, T + 1)).astype(np.int32)
        resp = np.zeros((B, T), bool)
        resp[:, prompt - 1 :] = True  # targets from the first response token on
        level = ((r.random((B, T)) < 0.15) & resp).astype(np.int8)
        cat = np.where(level > 0, r.integers(0, 6, (B, T)), -1).astype(np.int8)
        ours.append(
            dict(inputs=toks[:, :-1], targets=toks[:, 1:], response=resp, level=level, category=cat)
        )
        seqs.extend((row.tolist(), prompt) for row in toks)
    return ours, seqs


def matmul_gflops(n=1024, reps=10):
    a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
    mx.eval(a, b)
    mx.eval(a @ b)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        mx.eval(a @ b)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def flops_per_token(cfg, T):
    D, L, V, F = (
        cfg["hidden_size"],
        cfg["num_hidden_layers"],
        cfg["vocab_size"],
        cfg["intermediate_size"],
    )
    H, KV = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = cfg.get("head_dim") or D // H
    per_layer = D * H * hd + 2 * D * KV * hd + H * hd * D + 3 * D * F
    n_matmul = L * per_layer + D * V  # LM head included
    return 6 * n_matmul + 6 * L * T * D


def _rates(rows, args):
    """(tokens per wall second, tokens per CPU second) after the first report window."""
    (s0, t0, c0), (s1, t1, c1) = rows[0], rows[-1]
    toks = (s1 - s0) * args.batch * args.seq
    return toks / (t1 - t0), toks / (c1 - c0)


class Rates(TrainCallback):
    def __init__(self):
        self.rows = []

    def on_step(self, step, metrics):
        if "tok_s" in metrics:
            self.rows.append((step, time.perf_counter(), time.process_time()))


def run_ours(model_cfg, batches, args, select, all_logits=False):
    mx.random.seed(0)
    model = build_model(model_cfg)
    cb = Rates()
    loss_fn = None
    if all_logits:
        from cherry_mlx.selection.select import make_loss

        inner = make_loss(select, 0.7)
        loss_fn = lambda m, b: inner(m, b)  # noqa: E731  (no .needed: full logits)
    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(
            steps=args.steps,
            batch_size=args.batch,
            seq_len=args.seq,
            select=select,
            runs_dir=d,
            name="bench",
            eval_every=0,
            save_every=10**6,
            report_every=args.report,
            demo=False,
            warmup=2,
            grad_clip=0.0,
        )
        mx.reset_peak_memory()
        train(cfg, model=model, loss_fn=loss_fn, train_data=CycleBatches(batches), callbacks=[cb])
        peak = mx.get_peak_memory()
    return _rates(cb.rows, args), peak


def run_mlx_lm(model_cfg, seqs, args):
    from mlx_lm.tuner.callbacks import TrainingCallback
    from mlx_lm.tuner.trainer import TrainingArgs
    from mlx_lm.tuner.trainer import train as mlx_lm_train

    class Times(TrainingCallback):
        def __init__(self):
            self.rows = []

        def on_train_loss_report(self, info):
            self.rows.append((info["iteration"], time.perf_counter(), time.process_time()))

    mx.random.seed(0)
    model = build_model(model_cfg)
    mx.eval(model.parameters())
    opt = optim.AdamW(learning_rate=3e-3, weight_decay=0.01)
    cb = Times()
    with tempfile.TemporaryDirectory() as d:
        targs = TrainingArgs(
            batch_size=args.batch,
            iters=args.steps,
            steps_per_report=args.report,
            steps_per_eval=10**6,
            steps_per_save=10**6,
            max_seq_length=args.seq + 1,
            adapter_file=os.path.join(d, "a.safetensors"),
        )
        mx.reset_peak_memory()
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            mlx_lm_train(model, opt, seqs, args=targs, training_callback=cb)
        peak = mx.get_peak_memory()
    return _rates(cb.rows, args), peak


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cherry-tiny")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--report", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--prompt", type=int, default=64)
    args = ap.parse_args()
    model_cfg = load_config(resolve(args.preset))
    batches, seqs = make_data(
        args.steps, args.batch, args.seq, args.prompt, model_cfg["vocab_size"]
    )
    rows = [
        ("mlx-lm (default_loss)", *run_mlx_lm(model_cfg, seqs, args)),
        ("ours, full loss", *run_ours(model_cfg, batches, args, "all")),
        ("ours, SGT λ0.7", *run_ours(model_cfg, batches, args, "gt")),
        ("ours, SGT, all logits", *run_ours(model_cfg, batches, args, "gt", True)),
    ]
    peak_gflops = matmul_gflops()
    fpt = flops_per_token(model_cfg, args.seq)
    base, base_cpu = rows[0][1]
    print(
        f"{args.preset}: batch {args.batch} x {args.seq} (prompt {args.prompt}), "
        f"{args.steps} steps, fp32 matmul {peak_gflops:.0f} GFLOP/s"
    )
    print(
        f"{'trainer':<24} {'tok/s':>8} {'vs mlx-lm':>10} {'tok/cpu-s':>10} {'vs mlx-lm':>10} "
        f"{'peak MiB':>9} {'MFU':>6}"
    )
    for name, (tps, tpc), peak in rows:
        mfu = tps * fpt / 1e9 / peak_gflops
        print(
            f"{name:<24} {tps:>8.0f} {tps / base:>9.2f}x {tpc:>10.0f} {tpc / base_cpu:>9.2f}x "
            f"{peak / 2**20:>9.0f} {mfu:>6.1%}"
        )
    full, sgt = rows[1][1], rows[2][1]
    print(
        f"SGT loss cost over the plain loss (our trainer): {full[0] / sgt[0] - 1:+.1%} wall, "
        f"{full[1] / sgt[1] - 1:+.1%} CPU time per token"
    )
    print(
        "(tok/cpu-s: tokens per second of this process's CPU time, steadier than wall time on a "
        "shared machine)"
    )


if __name__ == "__main__":
    main()
