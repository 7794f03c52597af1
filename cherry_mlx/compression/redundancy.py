"""Layer redundancy measures on held-out hidden states: block influence and angular distance.

Shared by ``compress --analyze`` (diagnostics, ``analyze.py``) and the pruning baselines
(``prune.py``); kept apart from both so neither imports the healing pipeline through the other.
See ``analyze.py`` for the definitions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, List

import mlx.core as mx


def block_states(model, inputs: mx.array) -> List[mx.array]:
    """Residual stream before each block call and after the last one: ``depth + 1`` x (B, T, D)."""
    m = model.model
    h = m.embed(inputs)  # (B, T, D)
    masks = m.layer_masks(h)
    states = [h]
    for idx in m.schedule:
        h = m.layers[idx](h, masks[idx])
        states.append(h)
    return states


def _cos(a: mx.array, b: mx.array) -> mx.array:
    """Cosine per position, in float32. (B, T, D), (B, T, D) -> (B, T)"""
    a, b = a.astype(mx.float32), b.astype(mx.float32)
    num = (a * b).sum(-1)
    den = mx.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    return mx.clip(num / mx.maximum(den, 1e-12), -1.0, 1.0)


@dataclass
class LayerReport:
    """Per-layer redundancy measures; ``groups`` ranks aligned merge groups of size ``r``."""

    depth: int
    r: int
    tokens: int
    block_influence: List[float]
    angular: List[float]  # d(x_l, x_{l+r}) for l = 0 .. depth - r
    groups: List[Dict[str, object]] = field(default_factory=list)

    def as_dict(self) -> Dict[str, object]:
        return dict(self.__dict__)


def analyze_layers(
    model, batches: Iterable[dict], r: int = 2, max_batches: int = 8, angular_at: str = "all"
) -> LayerReport:
    """Average block influence and r-step angular distance over ``batches``.

    A batch needs ``inputs`` (B, T); positions where ``mask`` (or, failing that, ``response``
    or the non-padding part of ``targets``) is false are left out when a mask is present.
    ``angular_at="last"`` measures the angular distance at each row's last real token only, as
    Gromov et al. do (the position that has seen the whole sequence); ``"all"`` averages it over
    positions like the block influence.
    """
    if angular_at not in ("all", "last"):
        raise ValueError(f"angular_at={angular_at!r}: use 'all' or 'last'")
    depth = len(model.model.schedule)
    if not 1 <= r <= depth:
        raise ValueError(f"--factor {r}: the angular distance needs 1 <= r <= depth ({depth})")
    bi = [mx.array(0.0) for _ in range(depth)]
    ang = [mx.array(0.0) for _ in range(depth - r + 1)]
    count, count_ang = mx.array(0.0), mx.array(0.0)
    seen = 0
    for i, batch in enumerate(batches):
        if i >= max_batches:
            break
        x = batch["inputs"]
        w = _weights(batch)  # (B, T) float32
        wa = _last_token(w) if angular_at == "last" else w  # (B, T)
        states = block_states(model, x)
        for l in range(depth):  # noqa: E741  (l is the paper's layer index)
            bi[l] = bi[l] + ((1.0 - _cos(states[l], states[l + 1])) * w).sum()
        for l in range(depth - r + 1):  # noqa: E741
            ang[l] = ang[l] + (mx.arccos(_cos(states[l], states[l + r])) / math.pi * wa).sum()
        count, count_ang = count + w.sum(), count_ang + wa.sum()
        mx.eval(bi, ang, count, count_ang)
        seen += 1
    if seen == 0:
        raise ValueError("no held-out batches to analyse; check the data directory")
    n, n_ang = max(count.item(), 1.0), max(count_ang.item(), 1.0)
    report = LayerReport(
        depth=depth,
        r=r,
        tokens=int(count.item()),
        block_influence=[v.item() / n for v in bi],
        angular=[v.item() / n_ang for v in ang],
    )
    report.groups = rank_groups(report)
    return report


def _weights(batch: dict) -> mx.array:
    """Positions that hold real tokens: an explicit ``mask``, else everything up to the last
    response token of each row (trailing padding is never response), else all positions."""
    x = batch["inputs"]
    if "mask" in batch:
        return batch["mask"].astype(mx.float32)
    if "response" in batch:
        resp = batch["response"].astype(mx.int32)  # (B, T)
        tail = mx.cumsum(resp[:, ::-1], axis=1)[:, ::-1]  # response tokens at or after t
        return (tail > 0).astype(mx.float32)
    return mx.ones(x.shape, dtype=mx.float32)


def _last_token(w: mx.array) -> mx.array:
    """One-hot weights at each row's last position of weight > 0 (rows without any: none).
    (B, T) -> (B, T)"""
    T = w.shape[1]
    pos = mx.arange(T)[None, :]  # (1, T)
    last = mx.max(mx.where(w > 0, pos, -1), axis=1, keepdims=True)  # (B, 1)
    return (pos == last).astype(mx.float32)


def rank_groups(report: LayerReport) -> List[Dict[str, object]]:
    """Aligned groups ``[jr, jr + r)`` (what ``--factor r`` would merge), most redundant first."""
    r = report.r
    out = []
    for start in range(0, report.depth - r + 1, r):
        out.append(
            {
                "layers": list(range(start, start + r)),
                "angular": report.angular[start],
                "block_influence": sum(report.block_influence[start : start + r]) / r,
            }
        )
    return sorted(out, key=lambda g: g["angular"])
