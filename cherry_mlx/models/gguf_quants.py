"""llama.cpp's block quantisations decoded to float32 with MLX.

Each GGUF quantisation stores a tensor as fixed-size blocks of bytes (``BLOCKS``: elements and
bytes per block); a decoder takes the blocks as an ``(n, block_bytes)`` uint8 array and returns the
``(n, block_elements)`` float32 values, following ggml's reference layout (``ggml-quants.c``).
The same arithmetic as llama.cpp's own numpy decoders (the ``gguf`` package) in the same order, so
the result is bit-identical to theirs (tests/test_gguf_quants.py); done with MLX's vectorised
bit operations it is faster (bench/bench_import.py measures both).

Super-block ("K") types group 256 values into sub-blocks with their own small integer scale and
minimum, themselves scaled by a float16 ``d`` / ``dmin`` per super-block.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import mlx.core as mx

QK = 256  # values per K-quant super-block
# type id -> (name, elements per block, bytes per block)
BLOCKS: Dict[int, Tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    10: ("Q2_K", QK, 84),
    11: ("Q3_K", QK, 110),
    12: ("Q4_K", QK, 144),
    13: ("Q5_K", QK, 176),
    14: ("Q6_K", QK, 210),
    20: ("IQ4_NL", 32, 18),
    23: ("IQ4_XS", QK, 136),
    30: ("BF16", 1, 2),
}
# IQ4's non-linear 4-bit code book
IQ4_VALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)


def _f16(b: mx.array, at: int) -> mx.array:
    """The float16 stored at byte ``at`` of each block, as float32 ``(n, 1)``."""
    return b[:, at : at + 2].view(mx.float16).astype(mx.float32)


def _shift(x: mx.array, shifts, mask: int) -> mx.array:
    """``(x[..., None, :] >> s) & mask`` for each shift: (..., k) -> (..., len(shifts), k)."""
    s = mx.array(shifts, dtype=mx.uint8).reshape(len(shifts), 1)
    return mx.bitwise_and(mx.right_shift(mx.expand_dims(x, -2), s), mask)


def _nibbles(qs: mx.array, width: int) -> mx.array:
    """Runs of ``width`` bytes -> their low nibbles then their high nibbles: (n, m*width) ->
    (n, m, 2*width)."""
    n = qs.shape[0]
    return _shift(qs.reshape(n, -1, width), (0, 4), 0x0F).reshape(n, -1, 2 * width)


def _bits32(qh: mx.array) -> mx.array:
    """A little-endian bit field of 4 bytes -> its 32 bits in order, (n, 4) -> (n, 32)."""
    return _shift(qh, tuple(range(8)), 1).swapaxes(1, 2).reshape(qh.shape[0], 32)


def q4_0(b):
    q = _nibbles(b[:, 2:], 16).reshape(b.shape[0], 32)
    return _f16(b, 0) * (q.astype(mx.float32) - 8)


def q4_1(b):
    q = _nibbles(b[:, 4:], 16).reshape(b.shape[0], 32)
    return _f16(b, 0) * q.astype(mx.float32) + _f16(b, 2)


def _q5(b, at):
    high = mx.left_shift(_bits32(b[:, at : at + 4]), 4)
    return mx.bitwise_or(_nibbles(b[:, at + 4 :], 16).reshape(b.shape[0], 32), high)


def q5_0(b):
    return _f16(b, 0) * (_q5(b, 2).astype(mx.int8) - 16).astype(mx.float32)


def q5_1(b):
    return _f16(b, 0) * _q5(b, 4).astype(mx.float32) + _f16(b, 2)


def q8_0(b):
    return b[:, 2:].view(mx.int8).astype(mx.float32) * _f16(b, 0)


def q2_k(b):
    n = b.shape[0]
    sc = b[:, :16]
    dl = (_f16(b, 80) * mx.bitwise_and(sc, 0x0F).astype(mx.float32))[..., None]  # (n, 16, 1)
    ml = (_f16(b, 82) * mx.right_shift(sc, 4).astype(mx.float32))[..., None]
    q = _shift(b[:, 16:80].reshape(n, 2, 32), (0, 2, 4, 6), 3).reshape(n, 16, 16)
    return (dl * q.astype(mx.float32) - ml).reshape(n, QK)


def q3_k(b):
    n = b.shape[0]
    low = _shift(b[:, 96:104], (0, 4), 0x0F).reshape(n, 16)
    high = _shift(b[:, 104:108], (0, 2, 4, 6), 3).reshape(n, 16)
    sc = mx.bitwise_or(low, mx.left_shift(high, 4)).astype(mx.int8) - 32  # (n, 16) 6-bit signed
    dl = (_f16(b, 108) * sc.astype(mx.float32))[..., None]
    ql = _shift(b[:, 32:96].reshape(n, 2, 32), (0, 2, 4, 6), 3).reshape(n, 16, 16)
    hm = _shift(b[:, :32], tuple(range(8)), 1).reshape(n, 16, 16)
    # a clear mask bit subtracts 4: values -4..3
    q = ql.astype(mx.int8) - mx.left_shift(mx.bitwise_xor(hm, 1), 2).astype(mx.int8)
    return (dl * q.astype(mx.float32)).reshape(n, QK)


def _scale_min(s: mx.array) -> Tuple[mx.array, mx.array]:
    """Q4_K/Q5_K's 12 bytes -> eight 6-bit scales and eight 6-bit minimums, (n, 8) each."""
    d, m, md = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = mx.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = mx.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc.astype(mx.float32), mn.astype(mx.float32)


def _k_affine(b, q):
    """``d * scale * q - dmin * min`` over eight sub-blocks of 32 (q: (n, 8, 32))."""
    sc, mn = _scale_min(b[:, 4:16])
    d = (_f16(b, 0) * sc)[..., None]
    dm = (_f16(b, 2) * mn)[..., None]
    return (d * q.astype(mx.float32) - dm).reshape(b.shape[0], QK)


def q4_k(b):
    return _k_affine(b, _nibbles(b[:, 16:], 32).reshape(b.shape[0], 8, 32))


def q5_k(b):
    high = mx.left_shift(_shift(b[:, 16:48], tuple(range(8)), 1), 4)  # (n, 8, 32)
    low = _nibbles(b[:, 48:], 32).reshape(b.shape[0], 8, 32)
    return _k_affine(b, mx.bitwise_or(low, high))


def q6_k(b):
    n = b.shape[0]
    ql = _nibbles(b[:, :128], 64).reshape(n, 8, 32)
    qh = _shift(b[:, 128:192].reshape(n, 2, 32), (0, 2, 4, 6), 3).reshape(n, 8, 32)
    q = mx.bitwise_or(ql, mx.left_shift(qh, 4)).astype(mx.int8) - 32
    d = (_f16(b, 208) * b[:, 192:208].view(mx.int8).astype(mx.float32))[..., None]  # (n, 16, 1)
    return (d * q.reshape(n, 16, 16).astype(mx.float32)).reshape(n, QK)


def _iq4(q):
    return mx.take(mx.array(IQ4_VALUES, dtype=mx.float32), q.astype(mx.uint32))


def iq4_nl(b):
    return _f16(b, 0) * _iq4(_nibbles(b[:, 2:], 16).reshape(b.shape[0], 32))


def iq4_xs(b):
    n = b.shape[0]
    low = _shift(b[:, 4:8], (0, 4), 0x0F).swapaxes(1, 2).reshape(n, 8)
    high = _shift(b[:, 2:4], (0, 2, 4, 6), 3).swapaxes(1, 2).reshape(n, 8)
    sc = mx.bitwise_or(low, mx.left_shift(high, 4)).astype(mx.int8) - 32
    dl = (_f16(b, 0) * sc.astype(mx.float32))[..., None]  # (n, 8, 1)
    return (dl * _iq4(_nibbles(b[:, 8:], 16))).reshape(n, QK)


DECODERS: Dict[str, Callable[[mx.array], mx.array]] = {
    "Q4_0": q4_0,
    "Q4_1": q4_1,
    "Q5_0": q5_0,
    "Q5_1": q5_1,
    "Q8_0": q8_0,
    "Q2_K": q2_k,
    "Q3_K": q3_k,
    "Q4_K": q4_k,
    "Q5_K": q5_k,
    "Q6_K": q6_k,
    "IQ4_NL": iq4_nl,
    "IQ4_XS": iq4_xs,
}


def dequantize(raw: mx.array, type_name: str) -> mx.array:
    """Flat uint8 bytes of one tensor -> its float32 values, flat."""
    if type_name == "F32":
        return raw.view(mx.float32)
    if type_name == "F16":
        return raw.view(mx.float16).astype(mx.float32)
    if type_name == "BF16":
        return raw.view(mx.bfloat16).astype(mx.float32)  # exact: bf16 is a truncated float32
    _, _, nbytes = next(v for v in BLOCKS.values() if v[0] == type_name)
    return DECODERS[type_name](raw.reshape(-1, nbytes)).reshape(-1)
