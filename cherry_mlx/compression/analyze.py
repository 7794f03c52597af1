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

from typing import Optional

from cherry_mlx.compression.heal import Data, source_name
from cherry_mlx.compression.merge import plan_groups
from cherry_mlx.compression.redundancy import (  # noqa: F401  (re-exported)
    LayerReport,
    analyze_layers,
    block_states,
    rank_groups,
)
from cherry_mlx.models.loading import load_model, resolve
from cherry_mlx.models.runs import RUNS_DIR, latest_run


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
