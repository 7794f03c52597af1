"""Reports of compression runs: stage tables (report.md/json) and plots (PNG, Agg backend)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List


def _f(x: float, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.1%}"


def stage_table(res) -> str:
    """Markdown table: one row per stage (source, merged, merged-healed, unrolled, healed)."""
    lines = [
        "| stage | unique layers | effective depth | params | held-out loss | GT | non-GT "
        "| seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in res.stages:
        lines.append(
            f"| {s.name} | {s.unique_layers} | {s.effective_depth} | {s.params:,} | {_f(s.loss)} "
            f"| {_f(s.gt)} | {_f(s.non_gt)} | {s.seconds:.1f} |"
        )
    if res.control is not None:
        c = res.control
        lines.append(
            f"| control: {c.name} | {c.unique_layers} | {c.effective_depth} | {c.params:,} "
            f"| {_f(c.loss)} | {_f(c.gt)} | {_f(c.non_gt)} | {c.seconds:.1f} |"
        )
    lines.append("")
    lines.append(
        f"recovered fraction of the merge gap: {_pct(res.recovered)}"
        + (
            f" (before unrolling: {_pct(res.recovered_pre_unroll)})"
            if not math.isnan(res.recovered_pre_unroll)
            else ""
        )
    )
    return "\n".join(lines)


def write_report(res, cfg, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(res.as_dict(), indent=2) + "\n")
    (out_dir / "report.md").write_text(f"# compress {cfg.label()}\n\n{stage_table(res)}\n")
    plot_stages(res, out_dir / "stages.png")


def plot_stages(res, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s.name for s in res.stages]
    losses = [s.loss for s in res.stages]
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.plot(names, losses, "o-", color="#c0392b")
    for x, y in zip(names, losses):
        ax.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center")
    ax.axhline(losses[0], ls="--", color="grey", lw=1, label="source model")
    if res.control is not None:
        ax.axhline(res.control.loss, ls=":", color="#2c3e50", lw=1, label=res.control.name)
    ax.set_ylabel("held-out loss (response tokens)")
    ax.set_title(f"merge -> heal -> unroll -> heal (recovered {_pct(res.recovered)})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


SWEEP_COLUMNS = (
    "config",
    "unique",
    "loops",
    "effective_depth",
    "params",
    "loss_merged",
    "loss_merged_healed",
    "loss_unrolled",
    "loss_healed",
    "recovered",
    "seconds",
)


def sweep_table(rows: List[Dict], source: Dict) -> str:
    """Markdown in the shape of the paper's Tables 5 / C.2."""
    head = (
        "| config | unique | eff. depth | params | merged (pre-SGT) | merged + SGT | unrolled "
        "| healed (post-SGT) | recovered | wall s |"
    )
    lines = [
        head,
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| source (no merge) | {source['unique']} | {source['effective_depth']} | "
        f"{source['params']:,} | - | - | - | {_f(source['loss'])} | - | - |",
    ]
    if "loss_control" in source:
        lines.append(
            f"| source + {source['control_steps']} SGT steps (control) | {source['unique']} "
            f"| {source['effective_depth']} | {source['params']:,} | - | - | - "
            f"| {_f(source['loss_control'])} | - | - |"
        )
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['unique']} | {r['effective_depth']} | {r['params']:,} "
            f"| {_f(r['loss_merged'])} | {_f(r['loss_merged_healed'])} | {_f(r['loss_unrolled'])} "
            f"| {_f(r['loss_healed'])} | {_pct(r['recovered'])} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def plot_sweep(rows: List[Dict], source: Dict, path: Path) -> Path:
    """Left: healed loss vs parameters per config; right: healed loss vs loops per unique depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in rows:
        a.scatter(r["params"] / 1e6, r["loss_healed"], color="#c0392b")
        a.annotate(
            r["config"],
            (r["params"] / 1e6, r["loss_healed"]),
            fontsize=8,
            textcoords="offset points",
            xytext=(4, 4),
        )
    a.axhline(source["loss"], ls="--", color="grey", lw=1, label="source")
    if "loss_control" in source:
        a.axhline(source["loss_control"], ls=":", color="#2c3e50", lw=1, label="source + SGT")
    a.set_xlabel("parameters (M)")
    a.set_ylabel("held-out loss after healing")
    a.legend()
    by_unique: Dict[int, List[Dict]] = {}
    for r in rows:
        by_unique.setdefault(r["unique"], []).append(r)
    for u, rs in sorted(by_unique.items()):
        rs = sorted(rs, key=lambda r: r["loops"])
        b.plot([r["loops"] for r in rs], [r["loss_healed"] for r in rs], "o-", label=f"{u}L")
    b.axhline(source["loss"], ls="--", color="grey", lw=1)
    b.set_xlabel("core loops n")
    b.set_ylabel("held-out loss after healing")
    b.legend()
    fig.suptitle("depth compression sweep (cf. paper Tables 5 and C.2)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def stage_dicts(res) -> List[Dict]:
    return [asdict(s) for s in res.stages]
