"""GPTQ for every MLX format: NVFP4, MXFP4 and affine (Frantar et al., 2022).

mlx-lm's GPTQ (``mlx_lm.quant.gptq``) rounds to the affine integer grid only; NVFP4 rounds to the
E2M1 grid {0, .5, 1, 1.5, 2, 3, 4, 6} times an FP8 E4M3 block scale (MXFP4: a power-of-two E8M0
scale per 32). So this module keeps mlx-lm's Hessian capture (its ``Catcher``) and affine packing
and adds the FP4 rounding and packing. The algorithm, per Linear with weight W (out, in):

    H = Σ x xᵀ over calibration tokens (in, in),  U = chol(H⁻¹)ᵀ (upper)
    for each column j (blocks of columns, lazy updates):
        q_j = Q(w_j)  with the block scale of j's group, fixed when the group starts
        e_j = (w_j - q_j) / U_jj;  w_k -= e_j U_jk for k > j   (push the error onto later columns)

so the rounding error of each column is compensated by the columns not yet quantised, weighted by
how correlated their inputs are. Runs in numpy (float64) on the host: it is sequential over
columns and tiny next to a forward pass.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_unflatten
from mlx_lm.quant.gptq import Catcher
from mlx_lm.quant.gptq import quantize as pack_affine

E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
BLOCK = 128  # columns per lazy-update block (a multiple of every group size)


def capture_hessians(model, batches: Sequence[mx.array], paths: List[str]) -> Dict[str, np.ndarray]:
    """H = Σ x xᵀ of each Linear's input over the calibration batches (B, T) of token ids."""
    modules = dict(model.named_modules())
    catchers = [(p, Catcher(modules[p])) for p in paths]
    model.update_modules(tree_unflatten(catchers))
    try:
        for x in batches:
            model(x)
            mx.eval([c.H for _, c in catchers])
        return {p: np.array(c.H.astype(mx.float32), np.float64) for p, c in catchers}
    finally:
        model.update_modules(tree_unflatten([(p, c.module) for p, c in catchers]))


def _group_params(w: np.ndarray, mode: str, group: int, bits: int):
    """MLX's own block parameters for one group (out, group): what mx.quantize would choose."""
    parts = mx.quantize(mx.array(w.astype(np.float32)), group, bits, mode=mode)
    if mode == "affine":
        return parts[1], parts[2]
    return parts[1], None


def _scale_values(codes: mx.array, mode: str) -> np.ndarray:
    """Float block scales from MLX's uint8 codes: E4M3 (nvfp4) or E8M0 = 2^(c-127) (mxfp4)."""
    if mode == "nvfp4":
        return np.array(mx.from_fp8(codes, mx.float32), np.float64)
    return np.exp2(np.array(codes, np.float64) - 127.0)


def _round_fp4(x: np.ndarray) -> np.ndarray:
    """Nearest E2M1 index (0..7) of |x| (x already divided by its block scale)."""
    return np.abs(np.abs(x)[..., None] - E2M1).argmin(-1)


def gptq_linear(
    w: np.ndarray, H: np.ndarray, mode: str, group: int, bits: int, damp: float = 0.01
) -> Dict[str, mx.array]:
    """GPTQ-quantise one weight (out, in); returns the packed ``weight``, ``scales`` (and
    ``biases`` for affine) in MLX's layout."""
    W = w.astype(np.float64).copy()
    H = H.copy()
    n = W.shape[1]
    dead = np.diag(H) == 0  # inputs never active: their weights do not matter
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    mean_diag = np.mean(np.diag(H))
    for extra in (damp, 0.1, 1.0, 10.0):  # more damping until H⁻¹ is numerically positive definite
        Hd = H.copy()
        Hd[np.diag_indices(n)] += extra * mean_diag
        try:
            U = np.linalg.cholesky(np.linalg.inv(Hd)).T  # upper: H⁻¹ = Uᵀ U
            break
        except np.linalg.LinAlgError:
            if extra == 10.0:
                raise
    Q = np.zeros_like(W)
    scale_codes, biases, fp4_codes = [], [], np.zeros(W.shape, np.uint32)
    for b0 in range(0, n, BLOCK):
        b1 = min(b0 + BLOCK, n)
        W1, E1 = W[:, b0:b1].copy(), np.zeros((W.shape[0], b1 - b0))
        for i in range(b1 - b0):
            j = b0 + i
            if j % group == 0:  # the group's scale, from its columns as compensated so far
                sc, bi = _group_params(W1[:, i : i + group], mode, group, bits)
                scale_codes.append(sc)
                s = np.array(sc, np.float64)[:, 0] if mode == "affine" else None
                if mode == "affine":
                    bias = np.array(bi, np.float64)[:, 0]
                    biases.append(bi)
                else:
                    s = _scale_values(sc, mode)[:, 0]
            col = W1[:, i]
            if mode == "affine":
                k = np.clip(np.round((col - bias) / s), 0, 2**bits - 1)
                q = k * s + bias
            else:
                safe = np.where(s > 0, s, 1.0)
                idx = np.where(s > 0, _round_fp4(col / safe), 0)
                q = np.sign(col) * E2M1[idx] * s
                fp4_codes[:, j] = idx | ((col < 0) & (idx > 0)).astype(np.uint32) << 3
            Q[:, j] = q
            e = (col - q) / U[j, j]
            W1[:, i:] -= np.outer(e, U[j, j:b1])
            E1[:, i] = e
        W[:, b1:] -= E1 @ U[b0:b1, b1:]
    scales = mx.concatenate(scale_codes, axis=-1)
    if mode == "affine":
        bias = mx.concatenate(biases, axis=-1)
        return {"weight": pack_affine(mx.array(Q.astype(np.float32)), bits, scales, bias),
                "scales": scales, "biases": bias}  # fmt: skip
    per = 32 // bits  # 8 codes per uint32, the first in the lowest nibble
    c = fp4_codes.reshape(W.shape[0], -1, per)
    packed = (c << (bits * np.arange(per, dtype=np.uint32))).sum(-1, dtype=np.uint64)
    return {"weight": mx.array(packed.astype(np.uint32)), "scales": scales}


def gptq_quantize(
    model, batches: Sequence[mx.array], paths: List[str], mode: str, group: int, bits: int
) -> List[str]:
    """Replace the Linear layers at ``paths`` by GPTQ-quantised ones (in place); returns them."""
    hessians = capture_hessians(model, batches, paths)
    modules = dict(model.named_modules())
    swapped = []
    for p in paths:
        lin = modules[p]
        if not isinstance(lin, nn.Linear) or lin.weight.shape[-1] % group:
            continue
        parts = gptq_linear(np.array(lin.weight.astype(mx.float32)), hessians.pop(p), mode,
                            group, bits)  # fmt: skip
        q = lin.to_quantized(group_size=group, bits=bits, mode=mode)
        for k, v in parts.items():
            setattr(q, k, v if k == "weight" else v.astype(q[k].dtype))
        mx.eval(q.parameters())
        swapped.append((p, q))
    model.update_modules(tree_unflatten(swapped))
    return [p for p, _ in swapped]
