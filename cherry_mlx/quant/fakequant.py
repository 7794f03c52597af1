"""Fake quantisation: a quantised layer's dequantisation written out in the graph, so the block
scales (and affine biases) can be trained by gradient descent while the codes stay fixed.

Why not train MLX's ``QuantizedLinear`` directly (mlx-lm's DWQ does): on CPU its quantised matmul
is 5-13x slower than an fp32 matmul, and NVFP4/MXFP4 scales are 8-bit codes with no gradient. Here
each quantised matrix becomes

    W = codes · s  (+ b for affine)         codes (N, K) fixed: E2M1 values or integer levels
    s = s0 · exp(θ)   (NVFP4: rounded to E4M3, MXFP4: to a power of two, with a
                       straight-through gradient; affine: exact)
    b = b0 + s0 · β                          (affine only)

with θ and β the trainable parameters (dimensionless, zero at the start, so one learning rate
suits every layer whatever its scale). ``to_quantized`` packs the trained scales back into the
original layer's format: the real kernels then compute the same function up to float rounding.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten

E4M3_ONE = 56  # 1.0 in FP8 E4M3
E8M0_ONE = 127  # 1.0 in E8M0 (the exponent's bias)
E4M3_MAX = 448.0


def _ste(x: mx.array, rounded: mx.array) -> mx.array:
    """``rounded`` forward, identity gradient (straight-through estimator)."""
    return x + mx.stop_gradient(rounded - x)


def round_scale(s: mx.array, mode: str) -> mx.array:
    """The nearest scale the format can store (no gradient through the rounding itself)."""
    if mode == "nvfp4":
        return mx.from_fp8(mx.to_fp8(mx.clip(s, 0.0, E4M3_MAX)), dtype=mx.float32)
    if mode == "mxfp4":
        return mx.power(2.0, mx.round(mx.log2(mx.maximum(s, 2.0**-127))))
    return s


def encode_scale(s: mx.array, mode: str, dtype=mx.float32) -> mx.array:
    """Trained float scales -> the layer's stored ``scales`` array."""
    if mode == "nvfp4":
        return mx.to_fp8(mx.clip(s, 0.0, E4M3_MAX))
    if mode == "mxfp4":
        e = mx.round(mx.log2(mx.maximum(s, 2.0**-127))) + E8M0_ONE
        return mx.clip(e, 0, 254).astype(mx.uint8)
    return s.astype(dtype)


def decode_parts(q) -> Tuple[mx.array, mx.array, mx.array | None]:
    """A quantised layer -> (codes (N, K) float32, scales (N, K/g) float32, biases or None)."""
    mode, g, bits = q.mode, q.group_size, q.bits
    if mode == "affine":
        one = mx.ones(q.scales.shape, dtype=mx.float32)
        codes = mx.dequantize(q.weight, one, mx.zeros_like(one), g, bits, mode="affine",
                              dtype=mx.float32)  # fmt: skip
        return codes, q.scales.astype(mx.float32), q.biases.astype(mx.float32)
    unit = mx.full(q.scales.shape, E4M3_ONE if mode == "nvfp4" else E8M0_ONE, dtype=mx.uint8)
    codes = mx.dequantize(q.weight, unit, None, g, bits, mode=mode, dtype=mx.float32)
    if mode == "nvfp4":
        scales = mx.from_fp8(q.scales, dtype=mx.float32)
    else:
        scales = mx.power(2.0, q.scales.astype(mx.float32) - E8M0_ONE)
    return codes, scales, None


class _FakeQuant(nn.Module):
    """Shared by the linear and embedding forms: fixed codes, trainable ``theta`` (and ``beta``)."""

    def __init__(self, q):
        super().__init__()
        self.mode, self.group_size, self.bits = q.mode, q.group_size, q.bits
        codes, s0, b0 = decode_parts(q)
        object.__setattr__(self, "_source", q)  # packed layer (hidden from the module tree)
        self.codes = codes  # (N, K)
        self.s0 = s0  # (N, K/g)
        self.theta = mx.zeros_like(s0)
        if b0 is not None:
            self.b0 = b0
            self.beta = mx.zeros_like(s0)
        self.freeze()
        self.unfreeze(keys=["theta", "beta"] if b0 is not None else ["theta"], strict=False)

    def scales(self) -> mx.array:
        s = self.s0 * mx.exp(self.theta)
        return _ste(s, round_scale(s, self.mode)) if self.mode != "affine" else s

    def biases(self) -> mx.array | None:
        return self.b0 + self.s0 * self.beta if "beta" in self else None

    def _rows(self, codes, s, b):
        n, k = codes.shape
        w = codes.reshape(n, k // self.group_size, self.group_size) * s[..., None]
        if b is not None:
            w = w + b[..., None]
        return w.reshape(n, k)

    def dequantized(self) -> mx.array:
        """The weight (N, K) this layer multiplies by."""
        return self._rows(self.codes, self.scales(), self.biases())

    def to_quantized(self):
        """The source layer with the trained scales (and biases) packed in its format."""
        q = self._source
        s = mx.stop_gradient(self.scales())
        q.scales = encode_scale(s, self.mode, q.scales.dtype)
        if self.mode == "affine":
            q.biases = mx.stop_gradient(self.biases()).astype(q.biases.dtype)
        return q


class FakeQuantLinear(_FakeQuant):
    def __init__(self, q: nn.QuantizedLinear):
        super().__init__(q)
        if "bias" in q:
            self.bias = q.bias
            self.freeze(keys=["bias"], recurse=False)

    def __call__(self, x: mx.array) -> mx.array:
        y = x @ self.dequantized().T
        return y + self.bias if "bias" in self else y


class FakeQuantEmbedding(_FakeQuant):
    def __call__(self, ids: mx.array) -> mx.array:
        flat, b = ids.reshape(-1), self.biases()
        rows = self._rows(self.codes[flat], self.scales()[flat], None if b is None else b[flat])
        return rows.reshape(*ids.shape, -1)

    def as_linear(self, x: mx.array) -> mx.array:
        return x @ self.dequantized().T


def to_fake(model: nn.Module) -> List[str]:
    """Replace every quantised layer of ``model`` (in place) by its fake-quantised form and freeze
    everything else; returns the replaced paths. Only ``theta``/``beta`` stay trainable."""
    model.freeze()
    swaps = []
    for path, m in model.named_modules():
        if isinstance(m, nn.QuantizedLinear):
            swaps.append((path, FakeQuantLinear(m)))
        elif isinstance(m, nn.QuantizedEmbedding):
            swaps.append((path, FakeQuantEmbedding(m)))
    if swaps:
        model.update_modules(_unflatten(swaps))
    return [p for p, _ in swaps]


def from_fake(model: nn.Module) -> int:
    """Write every fake layer's trained scales back into its packed layer (in place)."""
    swaps = [(p, m.to_quantized()) for p, m in model.named_modules() if isinstance(m, _FakeQuant)]
    if swaps:
        model.update_modules(_unflatten(swaps))
    mx.eval(model.parameters())
    return len(swaps)


def _unflatten(pairs) -> Dict:
    return tree_unflatten(pairs)
