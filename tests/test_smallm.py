"""The decode-shaped sgemm kernel (``cherry_mlx/_smallm.c``) called directly: every layout it
accepts against numpy in float64, and each row of an M-row product bit for bit equal to the same
row alone (what keeps a speculative verify pass's logits equal to plain decode steps')."""

import ctypes

import mlx.core as mx
import numpy as np
import pytest

from cherry_mlx import _blas
from cherry_mlx.decoding.generate import GenerationStats, generate_tokens
from cherry_mlx.decoding.speculative import speculative_generate_tokens
from cherry_mlx.models import build_model

ROW, NO_T, T = 101, 111, 112

pytestmark = pytest.mark.skipif(
    _blas.find_openblas() is None, reason="the shim forwards to OpenBLAS, which is not installed"
)


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    """A private copy of the shim (this process's MLX is not rebound), connected to OpenBLAS."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    try:
        so = _blas._build_smallm()
    except OSError as err:
        pytest.skip(f"no C compiler here: {err}")
    finally:
        mp.undo()
    blas = ctypes.CDLL(_blas.find_openblas())
    lib = ctypes.CDLL(str(so))
    targets = [
        ctypes.cast(getattr(blas, n), ctypes.c_void_p) for n in ("cblas_sgemm", "cblas_sgemv")
    ]
    lib.cherry_smallm_set(*targets)
    return lib


def _counts(lib):
    small, gemm = ctypes.c_long(), ctypes.c_long()
    lib.cherry_smallm_counts(ctypes.byref(small), ctypes.byref(gemm))
    return small.value, gemm.value


def _gemm(lib, ta, tb, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc):
    f, p = ctypes.c_float, ctypes.c_void_p
    lib.cblas_sgemm(ROW, ta, tb, M, N, K, f(alpha), p(a.ctypes.data), lda, p(b.ctypes.data), ldb,
                    f(beta), p(c.ctypes.data), ldc)  # fmt: skip


def _padded(rng, rows, cols, pad):
    """A (rows, cols) view of a (rows, cols + pad) buffer: leading dimension cols + pad."""
    buf = rng.standard_normal((rows, cols + pad)).astype(np.float32)
    return buf, buf[:, :cols]


SHAPES = [(1, 1), (3, 7), (8, 8), (9, 16), (17, 33), (37, 64), (129, 576), (31, 1536)]


@pytest.mark.parametrize("M", range(1, 9))
def test_weight_transposed_products_match_numpy_with_strides_alpha_beta(shim, M):
    rng = np.random.default_rng(M)
    for N, K in SHAPES:
        for pad, alpha, beta in ((0, 1.0, 0.0), (5, 0.5, 0.0), (3, -1.5, 0.75)):
            abuf, a = _padded(rng, M, K, pad)  # activations, lda = K + pad
            bbuf, w = _padded(rng, N, K, 2 * pad)  # W (N x K), ldb = K + 2 pad
            cbuf, c0 = _padded(rng, M, N, pad)  # C, ldc = N + pad
            if beta == 0.0:
                cbuf[:, :N] = np.nan  # C's old contents must be ignored, NaN included
            want = alpha * (a.astype(np.float64) @ w.T.astype(np.float64))
            if beta:
                want += beta * c0.astype(np.float64)
            before = cbuf[:, N:].copy()
            _gemm(shim, NO_T, T, M, N, K, alpha, abuf, K + pad, bbuf, K + 2 * pad, beta, cbuf,
                  N + pad)  # fmt: skip
            scale = max(np.abs(want).max(), 1.0)
            assert np.abs(cbuf[:, :N] - want).max() / scale < 1e-5, (M, N, K, pad, alpha, beta)
            assert np.array_equal(cbuf[:, N:], before), "wrote past N in a padded row of C"


@pytest.mark.parametrize("N, K", [(37, 33), (129, 576), (2048, 576)])  # 2048 x 576: 2 threads
def test_each_row_is_bit_for_bit_the_one_row_product(shim, N, K):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((N, K)).astype(np.float32)
    x = rng.standard_normal((8, K)).astype(np.float32)
    alone = np.empty((8, N), np.float32)
    for m in range(8):
        _gemm(shim, NO_T, T, 1, N, K, 1.0, x[m].copy(), K, w, K, 0.0, alone[m], N)
    for M in range(2, 9):
        c = np.empty((M, N), np.float32)
        _gemm(shim, NO_T, T, M, N, K, 1.0, x[:M].copy(), K, w, K, 0.0, c, N)
        assert np.array_equal(c, alone[:M]), M


@pytest.mark.parametrize("M", range(1, 9))
def test_stored_b_products_match_numpy_and_the_one_row_product(shim, M):
    """B as stored (K x N, attention's probabilities @ values): odd N leaves a scalar tail."""
    rng = np.random.default_rng(10 + M)
    for N, K in ((1, 1), (5, 3), (64, 205), (70, 40), (100, 17)):
        for pad, alpha, beta in ((0, 1.0, 0.0), (3, 0.5, 0.0), (2, -1.5, 0.75)):
            abuf, a = _padded(rng, M, K, pad)
            bbuf, b = _padded(rng, K, N, 2 * pad)  # ldb = N + 2 pad
            cbuf, c0 = _padded(rng, M, N, pad)
            if beta == 0.0:
                cbuf[:, :N] = np.nan
            want = alpha * (a.astype(np.float64) @ b.astype(np.float64))
            if beta:
                want += beta * c0.astype(np.float64)
            alone = cbuf.copy()
            for m in range(M):  # each row alone (M = 1), from the same C
                _gemm(shim, NO_T, NO_T, 1, N, K, alpha, abuf[m].copy(), K + pad, bbuf, N + 2 * pad,
                      beta, alone[m], N + pad)  # fmt: skip
            _gemm(shim, NO_T, NO_T, M, N, K, alpha, abuf, K + pad, bbuf, N + 2 * pad, beta, cbuf,
                  N + pad)  # fmt: skip
            scale = max(np.abs(want).max(), 1.0)
            assert np.abs(cbuf[:, :N] - want).max() / scale < 1e-5, (M, N, K, pad, alpha, beta)
            assert np.array_equal(cbuf, alone), (M, N, K, pad, alpha, beta)


def test_only_decode_shapes_take_the_kernel(shim):
    """A transposed A, or more than 8 rows, goes to OpenBLAS's sgemm (and is still right)."""
    rng = np.random.default_rng(1)
    small0, gemm0 = _counts(shim)
    K, N = 40, 70
    b = rng.standard_normal((K, N)).astype(np.float32)
    for M in (1, 8, 9):
        a = rng.standard_normal((M, K)).astype(np.float32)
        c = np.empty((M, N), np.float32)
        _gemm(shim, NO_T, NO_T, M, N, K, 1.0, a, K, b, N, 0.0, c, N)
        assert np.abs(c - a.astype(np.float64) @ b.astype(np.float64)).max() < 1e-4
        _gemm(shim, T, NO_T, M, N, K, 1.0, a.T.copy(), M, b, N, 0.0, c, N)
        assert np.abs(c - a.astype(np.float64) @ b.astype(np.float64)).max() < 1e-4
    small1, gemm1 = _counts(shim)
    assert (small1 - small0, gemm1 - gemm0) == (2, 4)


def test_greedy_speculative_equals_plain_through_the_shim(tiny_config):
    """Every verify pass (2..4 rows) goes through the kernel in this process, and greedy output
    is plain greedy's token for token."""
    if _blas.smallm is None:
        pytest.skip(f"shim not loaded in this process: {_blas.smallm_status}")
    model = build_model({**tiny_config, "mtp": {"num_heads": 3}})
    mx.eval(model.parameters())
    prompt = [1, 5, 7, 9, 11, 3, 17]
    plain = list(generate_tokens(model, prompt, max_tokens=40))
    for k in (1, 2, 3):
        before = _blas.smallm_counts()[0]
        st = GenerationStats()
        spec = list(speculative_generate_tokens(model, prompt, max_tokens=40, stats=st,
                                                num_draft=k, adaptive=False))  # fmt: skip
        assert spec == plain, k
        assert st.rounds > 0 and _blas.smallm_counts()[0] > before


def test_untiled_arm_gives_the_same_weight_products_and_right_stored_b_ones(shim):
    """The benchmarks' "before" arm: W^T products bit for bit the tiled ones (same sums),
    stored-B ones through OpenBLAS's gemv (another order: numpy's tolerance)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((300, 576)).astype(np.float32)
    b = rng.standard_normal((205, 64)).astype(np.float32)
    for M in (1, 3, 5, 8):
        x = rng.standard_normal((M, 576)).astype(np.float32)
        p = rng.standard_normal((M, 205)).astype(np.float32)
        out = {}
        for on in (1, 0):
            shim.cherry_smallm_tiled(on)
            c, d = np.empty((M, 300), np.float32), np.full((M, 64), np.nan, np.float32)
            _gemm(shim, NO_T, T, M, 300, 576, 1.0, x, 576, w, 576, 0.0, c, 300)
            _gemm(shim, NO_T, NO_T, M, 64, 205, 1.0, p, 205, b, 64, 0.0, d, 64)
            out[on] = c, d
        shim.cherry_smallm_tiled(1)
        assert np.array_equal(out[0][0], out[1][0]), M
        ref = p.astype(np.float64) @ b.astype(np.float64)
        assert np.abs(out[0][1] - ref).max() < 1e-4 and np.abs(out[1][1] - ref).max() < 1e-4


def test_verify_pass_logits_equal_plain_steps_and_the_unpatched_path(tiny_config):
    """A trunk pass over 5 tokens (a K = 4 verify) gives bit for bit the logits of 5 one-token
    steps through the kernel, and the logits of OpenBLAS's sgemm within fp32 rounding."""
    if _blas.smallm is None:
        pytest.skip(f"shim not loaded in this process: {_blas.smallm_status}")
    model = build_model(tiny_config)
    mx.eval(model.parameters())
    cache = model.make_cache()
    mx.eval(model(mx.array([[1, 5, 7, 9, 11, 3, 17]]), cache=cache))
    toks = [4, 200, 31, 9, 77]

    def verify():
        out = model(mx.array([toks]), cache=cache)[0]  # (5, V)
        mx.eval(out)
        for c in cache:
            c.trim(len(toks))
        return np.array(out)

    def steps():
        rows = [np.array(model(mx.array([[t]]), cache=cache)[0, 0]) for t in toks]
        for c in cache:
            c.trim(len(toks))
        return np.stack(rows)

    try:
        kernel = verify()
        assert np.array_equal(kernel, steps())
        _blas.use_small_gemm(False)
        unpatched = verify()
    finally:
        _blas.use_small_gemm(True)
    assert np.allclose(kernel, unpatched, rtol=1e-5, atol=1e-5 * np.abs(unpatched).max())
