"""The decode-shaped sgemm kernel alone: one product per SmolLM2-135M weight shape, M = 1..5 and 8
activation rows, register tiles vs the untiled path they replaced, side by side in one process.

    python bench/bench_smallm.py [--reps 20] [--rounds 3]

Calls a private copy of the shim (``cherry_mlx/_smallm.c``) through ctypes, so MLX plays no part:
this is the kernel's own cost. Each weight matrix is fresh random fp32 (the LM head, 113 MB, does
not fit in a core's caches; the layer matrices do between repetitions, so they read as L2/L3
speed, not DRAM speed, unlike in a decode step). Times are the fastest of ``--reps`` calls, the
median over ``--rounds`` interleaved rounds; "x1" is each M's time over the same arm's M = 1.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import tempfile
import time

import numpy as np

from cherry_mlx import _blas

# (name, N, K): x @ W^T with W of N x K, as in one SmolLM2-135M decode step
SHAPES = [("q_proj/o_proj", 576, 576), ("k_proj/v_proj", 192, 576), ("gate/up", 1536, 576),
          ("down", 576, 1536), ("lm_head", 49152, 576)]  # fmt: skip
ROWS = (1, 2, 3, 4, 5, 8)


def load_shim():
    """A private copy of the shim (built in a throwaway cache), connected to OpenBLAS."""
    with tempfile.TemporaryDirectory() as cache:
        old = os.environ.get("XDG_CACHE_HOME")
        os.environ["XDG_CACHE_HOME"] = cache
        try:
            so = _blas._build_smallm()
            shim = ctypes.CDLL(str(so))
        finally:
            if old is None:
                os.environ.pop("XDG_CACHE_HOME")
            else:
                os.environ["XDG_CACHE_HOME"] = old
    blas = ctypes.CDLL(_blas.find_openblas())
    shim.cherry_smallm_set(*(ctypes.cast(getattr(blas, n), ctypes.c_void_p)
                             for n in ("cblas_sgemm", "cblas_sgemv")))  # fmt: skip
    return shim


def gemm(shim, x, w, c):
    (M, K), N = x.shape, w.shape[0]
    f, p = ctypes.c_float, ctypes.c_void_p
    shim.cblas_sgemm(101, 111, 112, M, N, K, f(1.0), p(x.ctypes.data), K, p(w.ctypes.data), K,
                     f(0.0), p(c.ctypes.data), N)  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    if _blas.find_openblas() is None:
        raise SystemExit("bench_smallm: no OpenBLAS found (apt-get install libopenblas0-pthread)")
    shim = load_shim()
    rng = np.random.default_rng(0)
    arms = ("untiled", "tiled")
    res = {}
    for name, N, K in SHAPES:
        w = rng.standard_normal((N, K)).astype(np.float32)
        x = rng.standard_normal((8, K)).astype(np.float32)
        reps = max(3, args.reps // 10) if N * K > 1 << 24 else args.reps
        for _ in range(args.rounds):
            for M in ROWS:
                xm, c = np.ascontiguousarray(x[:M]), np.empty((M, N), np.float32)
                for arm in arms:
                    shim.cherry_smallm_tiled(int(arm == "tiled"))
                    best = float("inf")
                    for _ in range(reps):
                        t = time.perf_counter()
                        gemm(shim, xm, w, c)
                        best = min(best, time.perf_counter() - t)
                    res.setdefault((name, arm, M), []).append(best)
    print(f"{'shape (N x K)':28}{'arm':9}" + "".join(f"{f'M={m}':>16}" for m in ROWS))
    for name, N, K in SHAPES:
        for arm in arms:
            t = {m: statistics.median(res[(name, arm, m)]) for m in ROWS}
            cells = "".join(f"{1e3 * t[m]:9.3f}ms x{t[m] / t[1]:<4.2f}" for m in ROWS)
            print(f"{f'{name} ({N} x {K})':28}{arm:9}{cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
