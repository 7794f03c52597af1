"""``report.md`` and PNG plots of a ``repro`` directory, written from its stage JSON alone.

The first table lists every claim: the paper's number, ours (mean ± sd over seeds, batches or
repetitions, as the "spread" column says), the control the paper lacks, and the verdict of the
rule in ``verdict.py``. Per-stage tables follow with the raw numbers behind the rows.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List

from cherry_mlx.evaluation.verdict import RULE
from cherry_mlx.pipelines.config import BUDGETS, ReproConfig
from cherry_mlx.pipelines.stage import Stage, stages


def fmt(x, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{nd}g}" if isinstance(x, float) else str(x)


def cell(text) -> str:
    """A markdown table cell: a literal '|' (as in |G|/|T|) must not split the row."""
    return str(text).replace("|", "\\|")


def mean(xs) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else math.nan


def verdict_table(results: Dict[str, Any], order: List[Stage]) -> List[str]:
    lines = [
        "| stage | paper | claim | paper's number | ours | control | spread | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for stage in (s.name for s in order):
        for r in (results.get(stage) or {}).get("rows", []):
            cells = [stage, r["table"], r["claim"], r["paper"], r["ours"], r["control"] or "-",
                     r["spread"], f"**{r['verdict']}**"]  # fmt: skip
            lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return lines


def write_report(out: Path, cfg: ReproConfig, manifest: Dict, results: Dict[str, Any]) -> Path:
    """``out/report.md`` and one PNG per stage that ran."""
    out = Path(out)
    order = list(stages())
    src = results.get("source")
    budget = {k: v for k, v in asdict(BUDGETS[cfg.budget]).items() if k != "name"}
    for st in order:
        budget.update({k: v[cfg.budget] for k, v in st.knobs.items()})
    lines = [
        f"# cherry-mlx repro: {cfg.model}, budget {cfg.budget}",
        "",
        f"Budget {cfg.budget}: "
        + ", ".join(f"{k} {v}" for k, v in budget.items())
        + "; each stage's `--set` overrides are in the table below.",
        "",
        f"Started {manifest.get('started')}, report {time.strftime('%Y-%m-%d %H:%M:%S')}; "
        "seeds per arm and `--set` overrides per stage in the table below. Source: "
        + (
            f"trained from scratch for {src['steps']} full-loss steps."
            if src
            else "MODEL as given."
        ),
        f"Verdict rule: {RULE}; fewer than 2 values (no spread) is inconclusive, except "
        "deterministic measurements (spread 'exact'), compared directly.",
        "",
        "| stage | seconds | seeds | `--set` |",
        "| --- | --- | --- | --- |",
    ]
    key = manifest.get("key", {})
    for stage in ("source", *(s.name for s in order)):
        if stage in results:
            res = results[stage]
            over = res.get("set", key.get("set")) if stage != "source" else None
            over = ",".join(f"{k}={v}" for k, v in over.items()) if over else "-"
            seeds = res.get("n_seeds", key.get("seeds")) if stage != "source" else "-"
            lines.append(f"| {stage} | {res.get('seconds', 0):.0f} | {seeds} | {over} |")
    lines += ["", "## Verdicts", ""] + verdict_table(results, order)
    for st in order:
        lines += ["", f"## {st.title}", ""]
        if st.name not in results:
            lines.append("not run (excluded by --only, or not finished yet)")
            continue
        lines += st.section(results[st.name])
        png = plot_stage(st, results[st.name], out / f"{st.name}.png")
        lines += ["", f"![{st.name}]({png.name})"]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_stage(stage: Stage, res: Dict[str, Any], path: Path) -> Path:
    """One bar chart per stage: the quantity its main claim is about (``Stage.plot``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, vals, ylabel = stage.plot(res)
    means = [mean(v) for v in vals]
    errs = [sd(v) for v in vals]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(range(len(labels)), means, yerr=errs, color="#c0392b", alpha=0.8, capsize=3)
    ax.set_xticks(range(len(labels)), labels, fontsize=8, rotation=20)
    ax.set_ylabel(ylabel)
    ax.set_title(stage.title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sd(xs) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if len(xs) < 2:
        return 0.0
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
