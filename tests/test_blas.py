"""The fast-BLAS preload: which library MLX's matmul binds to, checked in fresh processes."""

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from cherry_mlx import _blas

PROBE = """
import os, sys
{pre}
import cherry_mlx, mlx.core as mx
from cherry_mlx import _blas
a = mx.ones((64, 64)); mx.eval(a @ a)
maps = open('/proc/self/maps').read()
print(_blas.status, 'libopenblas' in maps)
"""


def _run(pre="", **env):
    full_env = {**os.environ, **env}
    full_env.pop("LD_PRELOAD", None)
    full_env.pop("_CHERRY_MLX_BLAS_SAID", None)
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(pre=pre)],
        capture_output=True,
        text=True,
        env=full_env,
        check=True,
    )
    return out.stdout.split(), out.stderr


needs_linux_reference = pytest.mark.skipif(
    sys.platform != "linux" or not _blas._reference_blas_bundled() or _blas.find_openblas() is None,
    reason="only Linux mlx-cpu wheels with OpenBLAS installed have something to preload",
)


@needs_linux_reference
def test_openblas_is_loaded_and_announced_once():
    (status, mapped), err = _run(CHERRY_MLX_QUIET="")
    assert status == "preloaded" and mapped == "True"
    assert err.count("using") == 1 and "CHERRY_MLX_FAST_BLAS=0" in err


@needs_linux_reference
def test_env_var_turns_it_off():
    (status, mapped), _ = _run(CHERRY_MLX_FAST_BLAS="0")
    assert status == "disabled" and mapped == "False"


@needs_linux_reference
def test_importing_mlx_first_is_reported_not_silently_slow():
    (status, mapped), err = _run(pre="import mlx.core", CHERRY_MLX_QUIET="")
    assert status == "too-late" and mapped == "False"
    assert "import cherry_mlx first" in err


@pytest.mark.skipif(sys.platform != "linux", reason="Linux-only path search")
def test_missing_library_gives_apt_hint(monkeypatch, capsys):
    monkeypatch.setattr(_blas, "status", "unknown")
    monkeypatch.setattr(_blas, "find_openblas", lambda: None)
    monkeypatch.setattr(_blas, "_reference_blas_bundled", lambda: True)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("CHERRY_MLX_QUIET", raising=False)
    monkeypatch.delitem(sys.modules, "mlx.core")  # pretend mlx is not imported yet
    assert _blas.ensure_fast_blas() == "missing"
    assert "apt-get install libopenblas0-pthread" in capsys.readouterr().err


SMALL_PROBE = """
import json, numpy as np
import cherry_mlx, mlx.core as mx
from cherry_mlx import _blas
rng = np.random.default_rng(0)
errs = []
for M in (1, 2, 3, 8, 9, 40):  # 1..8 rows take gemv, 9 and 40 stay on sgemm
    for N, K in ((5, 7), (70000, 33), (300, 1000)):  # 70000 x 33: many row blocks
        x = rng.standard_normal((M, K)).astype(np.float32)
        w = rng.standard_normal((N, K)).astype(np.float32)
        y = mx.array(x) @ mx.array(w).T  # B transposed (nn.Linear)
        z = mx.array(x) @ mx.array(w.T.copy())  # B as stored
        ref = x.astype(np.float64) @ w.T.astype(np.float64)
        scale = np.abs(ref).max()
        errs += [float(np.abs(np.array(y) - ref).max() / scale),
                 float(np.abs(np.array(z) - ref).max() / scale)]
# a verify pass's rows equal one-row products bit for bit (greedy speculative = plain greedy)
x = rng.standard_normal((5, 576)).astype(np.float32)
w = mx.array(rng.standard_normal((49152, 576)).astype(np.float32))
rows = np.array(mx.array(x) @ w.T)
same = all(np.array_equal(rows[m], np.array(mx.array(x[m : m + 1]) @ w.T)[0]) for m in range(5))
print(json.dumps([_blas.smallm_status, max(errs), *_blas.smallm_counts(), same]))
"""


def _small(**env):
    full_env = {**os.environ, "CHERRY_MLX_QUIET": "1", **env}
    full_env.pop("LD_PRELOAD", None)
    out = subprocess.run([sys.executable, "-c", SMALL_PROBE], capture_output=True, text=True,
                         env=full_env, check=True)  # fmt: skip
    return json.loads(out.stdout.splitlines()[-1])


@needs_linux_reference
def test_decode_shaped_products_take_gemv_and_agree_with_numpy():
    status, err, small, gemm, same = _small()
    if status.startswith("unavailable"):
        pytest.skip(f"no C compiler here: {status}")
    assert status == "on" and err < 1e-5 and same
    assert small == 2 * 3 * 4 + 6 and gemm >= 2 * 3 * 2  # M = 1, 2, 3, 8 vs M = 9, 40
    status, err, small, gemm, _ = _small(CHERRY_MLX_SMALL_GEMM="0")
    assert status == "disabled" and small == 0 and err < 1e-5


def _shim_gemm(shim, x, w):
    """x @ w.T through the shim's cblas_sgemm (row-major, B transposed) called from Python."""
    M, K = x.shape
    N = w.shape[0]
    c = np.empty((M, N), dtype=np.float32)
    f, p = ctypes.c_float, ctypes.c_void_p
    shim.cblas_sgemm(101, 111, 112, M, N, K, f(1.0), p(x.ctypes.data), K, p(w.ctypes.data), K,
                     f(0.0), p(c.ctypes.data), N)  # fmt: skip
    return c


@needs_linux_reference
def test_shim_is_exact_from_concurrent_callers_and_in_a_forked_child(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    try:
        so = _blas._build_smallm()
    except OSError as err:
        pytest.skip(f"no C compiler here: {err}")
    blas = ctypes.CDLL(_blas.find_openblas())
    shim = ctypes.CDLL(str(so))  # a private copy: this process's MLX is not rebound
    shim.cherry_smallm_set(*(ctypes.cast(getattr(blas, n), ctypes.c_void_p)
                             for n in ("cblas_sgemm", "cblas_sgemv")))  # fmt: skip
    rng = np.random.default_rng(0)
    w = rng.standard_normal((2048, 1024)).astype(np.float32)  # 2M weights: the helper thread
    xs = [rng.standard_normal((1 + i % 8, 1024)).astype(np.float32) for i in range(4)]
    want = [x.astype(np.float64) @ w.T.astype(np.float64) for x in xs]
    bad = []

    def caller(i):  # ctypes drops the GIL: four callers share the one helper
        for _ in range(25):
            if np.abs(_shim_gemm(shim, xs[i], w) - want[i]).max() > 1e-3:
                bad.append(i)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    small, gemm = ctypes.c_long(), ctypes.c_long()
    shim.cherry_smallm_counts(ctypes.byref(small), ctypes.byref(gemm))
    assert not bad and (small.value, gemm.value) == (100, 0)  # no count lost
    pid = os.fork()  # the helper thread does not survive a fork: the child must start its own
    if pid == 0:
        os._exit(0 if np.abs(_shim_gemm(shim, xs[0], w) - want[0]).max() < 1e-3 else 1)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert done[0] == pid and os.waitstatus_to_exitcode(done[1]) == 0
