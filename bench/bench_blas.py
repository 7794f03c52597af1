"""Fast BLAS on Linux: fp32 matmul and a training step, reference BLAS vs OpenBLAS, side by side.

Each setting runs in its own fresh process (the BLAS is bound when mlx loads), in one invocation:
    python bench/bench_blas.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

WORKER = r"""
import json, time
import cherry_mlx, mlx.core as mx, mlx.nn as nn, mlx.optimizers as optim
from cherry_mlx import _blas
from cherry_mlx.models import build_model
from cherry_mlx.models.loading import load_config, resolve
from cherry_mlx.selection.losses import full_loss

def best(f, n):
    f(); ts = []
    for _ in range(n):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]

N = 1024
a, b = mx.random.normal((N, N)), mx.random.normal((N, N)); mx.eval(a, b)
gflops = 2 * N**3 / best(lambda: mx.eval(a @ b), 5) / 1e9

mx.random.seed(0)
model = build_model(load_config(resolve("cherry-tiny"))); mx.eval(model.parameters())
opt = optim.AdamW(1e-3)
B, T, V = 8, 128, model.args.vocab_size
tok = mx.random.randint(0, V, (B, T + 1))
batch = {"inputs": tok[:, :-1], "targets": tok[:, 1:], "response": mx.ones((B, T), mx.bool_),
         "level": mx.zeros((B, T), mx.int8), "category": mx.full((B, T), -1, mx.int8)}
loss_and_grad = nn.value_and_grad(model, lambda m, bt: full_loss(m, bt)[0])
state = [model.state, opt.state]
@mx.compile
def step(bt):
    loss, g = loss_and_grad(model, bt); opt.update(model, g); return loss
step = mx.compile(step, inputs=state, outputs=state)
def run(): mx.eval(step(batch), state)
tps = B * T / best(run, 5)
print(json.dumps({"status": _blas.status, "matmul_gflops": gflops, "train_tok_s": tps}))
"""


def measure(fast: bool) -> dict:
    env = {**os.environ, "CHERRY_MLX_QUIET": "1", "CHERRY_MLX_FAST_BLAS": "1" if fast else "0"}
    env.pop("LD_PRELOAD", None)
    out = subprocess.run([sys.executable, "-c", WORKER], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    slow, fast = measure(False), measure(True)
    print(f"{'':24}{'reference BLAS':>16}{'fast BLAS':>12}{'ratio':>8}")
    print(f"{'BLAS status':24}{slow['status']:>16}{fast['status']:>12}")
    for key, label in (
        ("matmul_gflops", "fp32 matmul GFLOP/s"),
        ("train_tok_s", "cherry-tiny train tok/s"),
    ):
        print(f"{label:24}{slow[key]:>16.1f}{fast[key]:>12.1f}{fast[key] / slow[key]:>7.1f}x")


if __name__ == "__main__":
    main()
