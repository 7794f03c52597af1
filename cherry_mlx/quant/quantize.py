"""Quantise a model with MLX (build-then-swap): NVFP4 (with folded tensor scales), MXFP4, affine.

``quantize_model`` folds the NVFP4 tensor scales (``fold.py``), then swaps Linear/Embedding layers
for MLX's quantised ones through ``mlx_lm.utils.quantize_model`` (so the config's ``quantization``
block is exactly what mlx-lm's loader expects: a quantised plain Llama loads in ``mlx_lm.load``).
The embedding (tied LM head included) gets its scale through the residual stream; where that
is impossible (MTP heads) and plain NVFP4 would zero it, it stays in full precision (``auto_kept``).
``--keep`` leaves layers in full precision. ``quantize`` is the command's library call: load, fold,
quantise, save, and report bits per weight, weight memory and held-out loss against the source.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.utils import dequantize_model as mlx_lm_dequantize
from mlx_lm.utils import get_total_parameters
from mlx_lm.utils import quantize_model as mlx_lm_quantize

from cherry_mlx.quant.awq import awq_scale
from cherry_mlx.quant.fold import fold_tensor_scales, residual_foldable, target_scale
from cherry_mlx.quant.gptq import gptq_quantize
from cherry_mlx.quant.keep import check_keep
from cherry_mlx.quant.sensitivity import choose_bits, choose_kept, layer_sensitivity, parse_auto

# mode -> (MLX mode, group size, bits)
MODES: Dict[str, Tuple[str, int, int]] = {
    "nvfp4": ("nvfp4", 16, 4),
    "mxfp4": ("mxfp4", 32, 4),
    "affine4": ("affine", 64, 4),
    "affine8": ("affine", 64, 8),
}
# further affine widths for mixed precision (not a --mode of their own)
EXTRA_MODES: Dict[str, Tuple[str, int, int]] = {
    "affine5": ("affine", 64, 5),
    "affine6": ("affine", 64, 6),
}
ALL_MODES = {**MODES, **EXTRA_MODES}
# --keep aliases -> parameter-path tests
KEEP_ALIASES = {
    "embed": lambda p: p.endswith("embed_tokens"),
    "lm_head": lambda p: p == "lm_head",
    "gate": lambda p: any(s in ("gate", "router") for s in p.split(".")),
    "mtp": lambda p: p.startswith("mtp."),
    "attn": lambda p: ".self_attn." in p,
    "mlp": lambda p: ".mlp." in p,
}


def parse_keep(keep: Optional[str | Sequence[str]]) -> List[str]:
    if not keep:
        return []
    items = keep.split(",") if isinstance(keep, str) else list(keep)
    return [k.strip() for k in items if k.strip()]


def split_keep(keep: Sequence[str]) -> Tuple[List[str], Dict[str, str]]:
    """``--keep`` items -> (names kept in full precision, {name: MODE} quantised with another
    mode), e.g. ``embed:affine8`` quantises the embedding to 8 bits instead of keeping it; ``auto``
    items pass through unchanged."""
    check_keep(keep, tuple(ALL_MODES))  # no empty name (it matches every layer), one use per name
    plain, other = [], {}
    for k in keep:
        name, sep, mode = k.partition(":")
        if not sep or name == "auto":
            plain.append(k)
        elif mode not in ALL_MODES:
            raise ValueError(
                f"--keep {k!r}: {mode!r} is no mode; use one of {', '.join(ALL_MODES)}"
            )
        else:
            other[name] = mode
    return plain, other


def keep_predicate(keep: Sequence[str]):
    """path -> True when the layer stays in full precision (an alias or a path substring)."""
    tests = [KEEP_ALIASES.get(k, lambda p, k=k: k in p) for k in keep]
    return lambda path: any(t(path) for t in tests)


def _check_keep(model, keep: Sequence[str]) -> None:
    """Every --keep item must name at least one quantisable layer (a typo would silently keep
    nothing)."""
    paths = [p for p, m in model.named_modules() if hasattr(m, "to_quantized")]
    for k in keep:
        test = KEEP_ALIASES.get(k, lambda p, k=k: k in p)
        if not any(test(p) for p in paths):
            if k == "lm_head":
                continue  # tied: covered by embed
            raise ValueError(
                f"--keep {k!r} matches no layer of this model; use one of "
                f"{', '.join(KEEP_ALIASES)} or a path fragment such as 'layers.0.'"
                if paths
                else f"--keep {k!r}: this model has no quantisable layer"
            )


def _collapses(model) -> bool:
    """Would plain NVFP4 (no tensor scale) lose most of the embedding?"""
    w = model.model.embed_tokens.weight if hasattr(model, "model") else None
    if w is None or w.shape[-1] % 16:
        return False
    q, sc = mx.quantize(w, mode="nvfp4")
    d = mx.dequantize(q, sc, mode="nvfp4", dtype=mx.float32)
    return (mx.linalg.norm(d - w) / mx.maximum(mx.linalg.norm(w), 1e-30)).item() > 0.5


def _kept_paths(model, kept) -> List[str]:
    return [p for p, m in model.named_modules() if hasattr(m, "to_quantized") and kept(p)]


CALIBRATIONS = ("gptq", "awq", "awq+gptq")


def _matrix_bits(mode: str, dtype_bits: int) -> float:
    """Stored bits per weight of a quantised matrix: values plus block scales (and biases)."""
    mlx_mode, group, bits = ALL_MODES[mode]
    return bits + (8 if mlx_mode != "affine" else 2 * dtype_bits) / group


def quantize_model(
    model: nn.Module,
    config: Dict[str, Any],
    mode: str = "nvfp4",
    keep: Sequence[str] = (),
    fold: bool = True,
    calibrate: Optional[str] = None,
    calib: Optional[Sequence[mx.array]] = None,
    bits_budget: Optional[float] = None,
    upgrade: str = "affine5,affine6,affine8",
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Quantise ``model`` in place; returns it and the config to save with it.

    ``keep`` may hold ``auto`` / ``auto:BITS`` (layers chosen by their measured sensitivity
    within a bits-per-weight budget) and ``calibrate="gptq"`` quantises the Linear layers with
    GPTQ (``awq``: activation-aware channel scales folded in first; ``awq+gptq``: both); all need
    ``calib``, calibration batches of token ids (B, T)."""
    if mode not in MODES:
        raise ValueError(f"--mode {mode!r}: use one of {', '.join(MODES)}")
    if "quantization" in config:
        raise ValueError("model is already quantised; quantise the full-precision model instead")
    if calibrate not in (None, *CALIBRATIONS):
        raise ValueError(f"--calibrate {calibrate!r}: use one of {', '.join(CALIBRATIONS)}")
    mlx_mode, group, bits = MODES[mode]
    keep = list(keep)
    dtype_bits = model.model.embed_tokens.weight.dtype.size * 8 if hasattr(model, "model") else 32
    q_bits = _matrix_bits(mode, dtype_bits)
    budgets = [b for b in (parse_auto(k, q_bits) for k in keep) if b is not None]
    keep, other = split_keep([k for k in keep if parse_auto(k, q_bits) is None])
    if config.get("tie_word_embeddings", False) and "lm_head" in other:
        other.setdefault("embed", other.pop("lm_head"))  # a tied head is the embedding
    if bits_budget is not None:
        _check_budget(bits_budget, q_bits, upgrade)
    if (budgets or calibrate or bits_budget is not None) and not calib:
        raise ValueError("--keep auto and --calibrate need calibration data (--calib-data DIR)")
    if "lm_head" in keep and config.get("tie_word_embeddings", False):
        # a tied LM head is the embedding matrix: keeping the head keeps the embedding
        keep = keep + ["embed"] if "embed" not in keep else keep
    _check_keep(model, keep + list(other))
    config = dict(config)  # the fold may rescale rms_norm_eps
    folded, auto_kept, info_awq = {}, [], {}
    if calibrate and "awq" in calibrate:  # before the fold, which then rescales its result
        info_awq = {"awq_spread": awq_scale(model, calib, mlx_mode, group, bits)}
    if fold and mlx_mode == "nvfp4":
        if not residual_foldable(model) and "embed" not in keep and _collapses(model):
            auto_kept = keep = keep + ["embed"]  # no scale possible: keep it rather than zero it
        kept = keep_predicate(keep + list(other))  # other modes carry their own scales
        folded = fold_tensor_scales(model, skip=_kept_paths(model, kept), config=config)
    base_kept = keep_predicate(keep)
    chosen: List[str] = []
    info: Dict[str, Any] = dict(info_awq)
    if budgets:  # measured on the model as it will be quantised (folded)
        cands = [p for p, m in model.named_modules() if hasattr(m, "to_quantized")
                 and not base_kept(p) and m.weight.shape[-1] % group == 0]  # fmt: skip
        sens = layer_sensitivity(model, calib, cands, group, bits, mlx_mode)
        sizes = {p: m.weight.size for p, m in model.named_modules() if p in sens}
        chosen, avg = choose_kept(sizes, sens, q_bits, budgets[0], dtype_bits)
        info = {"keep_auto": chosen, "keep_auto_bits": round(avg, 3),
                "sensitivity": {p: float(f"{v:.4g}") for p, v in sens.items()}}  # fmt: skip

    if bits_budget is not None:
        info.update(_budget_upgrades(model, calib, keep_predicate(keep + list(other)), mode,
                                     upgrade, bits_budget, dtype_bits))  # fmt: skip
        other.update(info["upgraded"])
    other_tests = [(keep_predicate([n]), m) for n, m in other.items()]

    def kept(path):
        return base_kept(path) or path in chosen or any(t(path) for t, _ in other_tests)

    def predicate(path, module):
        for test, m in other_tests:
            if test(path):
                mm, g, b = ALL_MODES[m]
                return {"group_size": g, "bits": b, "mode": mm}
        return not kept(path)

    if calibrate and "gptq" in calibrate:
        linears = [p for p, m in model.named_modules() if isinstance(m, nn.Linear) and not kept(p)]
        info["gptq_layers"] = len(gptq_quantize(model, calib, linears, mlx_mode, group, bits))
    with contextlib.redirect_stdout(io.StringIO()):  # mlx-lm prints its own bpw line
        model, qconfig = mlx_lm_quantize(
            model,
            config,
            group,
            bits,
            mode=mlx_mode,
            quant_predicate=predicate,
        )
    qconfig["cherry_quant"] = {"mode": mode, "keep": list(keep), "folded_layers": len(folded)}
    if other:
        qconfig["cherry_quant"]["other_modes"] = dict(other)
    if "model.embed_tokens" in folded:
        qconfig["cherry_quant"]["embed_scale"] = folded["model.embed_tokens"]["embed"]
    if auto_kept:
        qconfig["cherry_quant"]["auto_kept"] = ["embed"]
    if calibrate:
        qconfig["cherry_quant"]["calibrate"] = calibrate
    qconfig["cherry_quant"].update(info)
    mx.eval(model.parameters())
    return model, qconfig


def _check_budget(budget: float, q_bits: float, upgrade: str) -> None:
    bad = [u for u in upgrade.split(",") if u not in ALL_MODES]
    if bad:
        raise ValueError(f"upgrade mode {bad[0]!r}: use some of {', '.join(ALL_MODES)}")
    if budget < q_bits:
        raise ValueError(f"--bits-budget {budget}: below the mode's {q_bits} bits per weight")


def _budget_upgrades(model, calib, fixed, mode, upgrade, budget, dtype_bits) -> Dict[str, Any]:
    """Layers given more bits under ``budget``: KL(full ‖ only this layer quantised) per layer,
    measured on ``calib`` in ``mode``, then greedy by KL saved per extra bit (``choose_bits``)."""
    mlx_mode, group, bits = MODES[mode]
    ups = upgrade.split(",")
    step = math.lcm(group, *(ALL_MODES[u][1] for u in ups))
    cands = [p for p, m in model.named_modules() if hasattr(m, "to_quantized") and not fixed(p)
             and m.weight.shape[-1] % step == 0]  # fmt: skip
    sens = layer_sensitivity(model, calib, cands, group, bits, mlx_mode)
    sizes = {p: m.weight.size for p, m in model.named_modules() if p in sens}
    options = {u: (_matrix_bits(u, dtype_bits), ALL_MODES[u][2]) for u in ups}
    chosen, avg = choose_bits(sizes, sens, _matrix_bits(mode, dtype_bits), options, budget, bits)
    return {"upgraded": chosen, "upgrade_modes": ups, "budget_bits": round(avg, 3),
            "sensitivity": {p: float(f"{v:.4g}") for p, v in sens.items()}}  # fmt: skip


def weight_memory(model) -> Dict[str, float]:
    """Bytes of all parameters, and bits per weight over all / over quantised matrices."""
    total_bytes, n_params, q_bytes, q_params = 0, 0, 0, 0
    for path, m in model.named_modules():
        if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            nb = sum(v.nbytes for _, v in tree_flatten(m.parameters()))
            q_bytes += nb
            q_params += m.weight.size * 32 // m.bits
    for _, v in tree_flatten(model.parameters()):
        total_bytes += v.nbytes
    n_params = get_total_parameters(model)
    return {
        "bytes": float(total_bytes),
        "params": int(n_params),
        "bits_per_weight": total_bytes * 8 / max(n_params, 1),
        "quantized_bits_per_weight": q_bytes * 8 / q_params if q_params else 32.0,
    }


def quant_error(w: mx.array, mode: str) -> float:
    """Relative Frobenius error of quantise -> dequantise, with the tensor scale for nvfp4."""
    mlx_mode, group, bits = MODES[mode]
    s = 1.0
    if mlx_mode == "nvfp4":
        s = target_scale(w)
    parts = mx.quantize(w * s, group, bits, mode=mlx_mode)
    biases = parts[2] if len(parts) == 3 else None
    d = mx.dequantize(parts[0], parts[1], biases, group, bits, mode=mlx_mode, dtype=w.dtype) / s
    return (mx.linalg.norm(d - w) / mx.maximum(mx.linalg.norm(w), 1e-30)).item()


def dequantize(model: nn.Module) -> nn.Module:
    """The same network with fp32 weights (in place): each quantised matrix replaced by its
    dequantised values. Held-out losses on it equal the quantised model's up to float rounding,
    and on CPU it runs 5-13x faster than MLX's quantised matmul (mlx-lm's dequantize_model)."""
    return mlx_lm_dequantize(model)
