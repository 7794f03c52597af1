"""Sensitivity-aware keep lists (``--keep auto[:BITS]``): which layers to leave in full precision.

A layer's sensitivity is what quantising it *alone* costs the whole model on calibration batches:
the mean over tokens of KL(p_full ‖ p_one-layer-quantised). That sees what a per-layer weight
error cannot: how much the rest of the network amplifies the layer's error (an embedding shared
with a tied LM head, a down projection writing outliers into the residual stream). Layers are then
kept greedily by sensitivity per extra bit spent, while the average bits per weight over all
quantisable matrices stays within the budget.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import mlx.core as mx
from mlx.utils import tree_unflatten

AUTO_EXTRA_BITS = 0.5  # default budget: the mode's bits per weight + this


def parse_auto(item: str, mode_bits: float) -> float | None:
    """``auto`` -> the default budget, ``auto:5.2`` -> 5.2 bits per weight; other items -> None."""
    if item != "auto" and not item.startswith("auto:"):
        return None
    if item == "auto":
        return mode_bits + AUTO_EXTRA_BITS
    try:
        budget = float(item.split(":", 1)[1])
    except ValueError:
        raise ValueError(f"--keep {item!r}: write auto or auto:BITS, e.g. auto:5.0") from None
    if budget < mode_bits:
        raise ValueError(f"--keep {item}: the budget is below the mode's {mode_bits} bits/weight")
    return budget


def _mean_kl(model, batches, ref_logp) -> float:
    tot, n = 0.0, 0
    for x, lp in zip(batches, ref_logp):
        logits = model(x).astype(mx.float32)
        q = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        tot += (mx.exp(lp) * (lp - q)).sum().item()  # Σ over tokens of KL(full ‖ quantised)
        n += x.size
    return tot / max(n, 1)


def layer_sensitivity(
    model, batches: Sequence[mx.array], paths: List[str], group: int, bits: int, mode: str
) -> Dict[str, float]:
    """KL(full ‖ only ``path`` quantised) per path, mean per token over ``batches`` (B, T)."""
    ref = []
    for x in batches:
        logits = model(x).astype(mx.float32)
        ref.append(logits - mx.logsumexp(logits, axis=-1, keepdims=True))
    mx.eval(ref)
    modules = dict(model.named_modules())
    out = {}
    for p in paths:
        full = modules[p]
        model.update_modules(tree_unflatten([(p, full.to_quantized(group, bits, mode=mode))]))
        out[p] = _mean_kl(model, batches, ref)
        model.update_modules(tree_unflatten([(p, full)]))
    return out


def choose_kept(
    sizes: Dict[str, int], sensitivity: Dict[str, float], q_bits: float, budget: float,
    full_bits: float = 32.0,
) -> Tuple[List[str], float]:  # fmt: skip
    """Greedy keep list: most sensitivity per parameter first, while the average bits per weight
    over ``sizes`` (parameters per layer) stays <= ``budget``. Returns the list and its bits."""
    total = sum(sizes.values())
    spent = q_bits * total
    kept = []
    order = sorted(sizes, key=lambda p: sensitivity[p] / sizes[p], reverse=True)
    for p in order:
        extra = (full_bits - q_bits) * sizes[p]
        if sensitivity[p] > 0 and (spent + extra) / total <= budget:
            kept.append(p)
            spent += extra
    return kept, spent / total


def choose_bits(
    sizes: Dict[str, int], sensitivity: Dict[str, float], q_bits: float,
    options: Dict[str, Tuple[float, int]], budget: float, base_bits: int = 4,
) -> Tuple[Dict[str, str], float]:  # fmt: skip
    """Bits per layer under a budget: ``options`` maps an upgrade mode to (stored bits per weight,
    value bits). A layer's KL at b value bits is modelled as its measured KL at ``base_bits``
    times 4^-(b - base_bits) (KL is quadratic in the weight error for small errors, and each
    extra bit halves the error); moves are taken greedily by KL saved per extra bit, so a large
    sensitive matrix (the embedding) can get 5 or 6 bits where 8 would not fit.
    Returns ({path: mode} for the upgraded layers, average bits per weight over ``sizes``)."""
    total = sum(sizes.values())
    spent = q_bits * total
    ladder = sorted(options.items(), key=lambda kv: kv[1][0])  # cheapest first
    current: Dict[str, int] = {p: -1 for p in sizes}  # index into ladder, -1 = base mode

    def kl(p, i):
        b = base_bits if i < 0 else ladder[i][1][1]
        return sensitivity[p] * 4.0 ** -(b - base_bits)

    def cost(p, i):
        return (q_bits if i < 0 else ladder[i][1][0]) * sizes[p]

    while True:
        best = None
        for p, i in current.items():
            for j in range(i + 1, len(ladder)):
                extra = cost(p, j) - cost(p, i)
                if extra <= 0 or (spent + extra) / total > budget:
                    continue
                gain = (kl(p, i) - kl(p, j)) / extra
                if gain > 0 and (best is None or gain > best[0]):
                    best = (gain, p, j, extra)
        if best is None:
            break
        _, p, j, extra = best
        current[p] = j
        spent += extra
    return {p: ladder[i][0] for p, i in current.items() if i >= 0}, spent / total
