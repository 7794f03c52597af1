"""Layer diagnostics before merging: which adjacent layers are redundant?

Two standard measures on held-out hidden states (the residual stream entering each block call):

- block influence (ShortGPT, Men et al. 2024): ``BI_l = 1 - E_t[cos(x_l, x_{l+1})]``, how much
  block l turns its input; a small BI means the block barely changes the stream;
- angular distance (Gromov et al. 2024): ``d(x_l, x_{l+r}) = E_t[arccos(cos(x_l, x_{l+r})) / pi]``
  in [0, 1], how far r consecutive blocks move the stream. A group of r adjacent layers with a small
  distance is a good candidate for averaging into one.

Both are averaged over every non-padding position of the held-out batches (Gromov et al. use the
last token only; all positions is less noisy on short examples). For a recurrent model the
"layers" are block calls in schedule order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

import mlx.core as mx
from mlx_lm.models.base import create_attention_mask

from cherry_mlx.compression.heal import Data, source_name
from cherry_mlx.compression.merge import plan_groups
from cherry_mlx.models.loading import load_model, resolve
from cherry_mlx.models.runs import RUNS_DIR, latest_run


def block_states(model, inputs: mx.array) -> List[mx.array]:
    """Residual stream before each block call and after the last one: ``depth + 1`` x (B, T, D)."""
    m = model.model
    h = m.embed_tokens(inputs)  # (B, T, D)
    mask = create_attention_mask(h, None)
    states = [h]
    for idx in m.schedule:
        h = m.layers[idx](h, mask)
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


def analyze_layers(model, batches: Iterable[dict], r: int = 2, max_batches: int = 8) -> LayerReport:
    """Average block influence and r-step angular distance over held-out ``batches``.

    A batch needs ``inputs`` (B, T); positions where ``mask`` (or, failing that, ``response``
    or the non-padding part of ``targets``) is false are left out when a mask is present.
    """
    depth = len(model.model.schedule)
    if not 1 <= r <= depth:
        raise ValueError(f"--factor {r}: the angular distance needs 1 <= r <= depth ({depth})")
    bi = [mx.array(0.0) for _ in range(depth)]
    ang = [mx.array(0.0) for _ in range(depth - r + 1)]
    count = mx.array(0.0)
    seen = 0
    for i, batch in enumerate(batches):
        if i >= max_batches:
            break
        x = batch["inputs"]
        w = _weights(batch)  # (B, T) float32
        states = block_states(model, x)
        for l in range(depth):  # noqa: E741  (l is the paper's layer index)
            bi[l] = bi[l] + ((1.0 - _cos(states[l], states[l + 1])) * w).sum()
        for l in range(depth - r + 1):  # noqa: E741
            ang[l] = ang[l] + (mx.arccos(_cos(states[l], states[l + r])) / math.pi * w).sum()
        count = count + w.sum()
        mx.eval(bi, ang, count)
        seen += 1
    if seen == 0:
        raise ValueError("no held-out batches to analyse; check the data directory")
    n = max(count.item(), 1.0)
    report = LayerReport(
        depth=depth,
        r=r,
        tokens=int(count.item()),
        block_influence=[v.item() / n for v in bi],
        angular=[v.item() / n for v in ang],
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


def run_analysis(cfg, r: Optional[int] = None, out_dir=None, log=print) -> LayerReport:
    """``compress --analyze``: diagnostics of ``cfg.model`` on its held-out split; ``r`` defaults
    to the merge factor that ``cfg`` asks for (``--to``/``--factor``), else 2."""
    from pathlib import Path

    model_name = cfg.model or latest_run(require_model=True)
    if model_name is None:
        raise FileNotFoundError("no model given and no runs/ yet: pass MODEL or train first")
    model_dir = resolve(model_name)
    model, _ = load_model(model_dir)
    if r is None:
        n = len(model.layers)
        given = any(v is not None for v in (cfg.to, cfg.factor, cfg.groups))
        r = max(len(g) for g in plan_groups(n, cfg.to, cfg.factor, cfg.groups)) if given else 2
    data = Data.load(cfg, model_dir)
    report = analyze_layers(model, data.batches, r=r, max_batches=max(cfg.eval_batches, 8))
    log(format_report(report))
    out_dir = Path(out_dir or RUNS_DIR / f"{source_name(model_dir)}-analyze")
    out_dir.mkdir(parents=True, exist_ok=True)
    import json

    (out_dir / "layers.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    log(f"plot: {plot_report(report, out_dir / 'layers.png')}")
    return report


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


def format_report(report: LayerReport) -> str:
    """Plain-text table: per layer BI and the r-step distance starting at that layer."""
    r = report.r
    lines = [
        f"layer diagnostics over {report.tokens} held-out tokens "
        f"(BI = 1 - cos(in, out); d_r = angle(x_l, x_l+{r}) / pi)",
        f"{'layer':>5} {'BI':>8} {'d_' + str(r):>8}",
    ]
    for l, b in enumerate(report.block_influence):  # noqa: E741
        d = f"{report.angular[l]:8.4f}" if l < len(report.angular) else f"{'':>8}"
        lines.append(f"{l:>5} {b:8.4f} {d}")
    lines.append(f"aligned groups of {r}, most redundant first (smallest d_{r}):")
    for g in report.groups:
        lines.append(
            f"  layers {g['layers'][0]}-{g['layers'][-1]}: d_{r} = {g['angular']:.4f}, "
            f"mean BI = {g['block_influence']:.4f}"
        )
    return "\n".join(lines)


def plot_report(report: LayerReport, path) -> Optional[str]:
    """Bar plot of BI and line of d_r per layer (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    xs = list(range(report.depth))
    ax.bar(xs, report.block_influence, color="#c0392b", alpha=0.7, label="block influence")
    ax.plot(
        list(range(len(report.angular))),
        report.angular,
        "o-",
        color="#2c3e50",
        label=f"angular distance l -> l+{report.r}",
    )
    ax.set_xlabel("layer (block call)")
    ax.set_ylabel("distance")
    ax.legend()
    ax.set_title("redundancy of adjacent layers (low = safe to merge)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
