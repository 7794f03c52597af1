"""``report.md`` and PNG plots of a ``repro`` directory, written from its stage JSON alone.

The first table lists every claim: the paper's number, ours (mean ± one sample standard deviation
over the n seeds, batches or repetitions the "spread" column names), the control the paper lacks,
and the verdict of the rule in ``verdict.py``. The rows are derived again from each stage's raw
numbers whenever the report is written, so ``repro --report-only`` applies the current rule and
definitions to old results without training anything. Per-stage tables follow with the raw
numbers behind the rows.

Results are strict JSON: a NaN (an undefined ratio, a missing spread) is written as ``null``;
files written before that (``NaN`` literals) still read, as ``null`` too.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List

from cherry_mlx.evaluation.verdict import RULE, SPREAD
from cherry_mlx.pipelines.config import BUDGETS, ReproConfig
from cherry_mlx.pipelines.stage import Stage, stages


def strict(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None (JSON has no NaN or Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    """Strict JSON text (``allow_nan=False``: a NaN that slipped past ``strict`` is an error)."""
    return json.dumps(strict(obj), indent=2, ensure_ascii=False, default=str, allow_nan=False)


def write_json(path: Path, obj: Any) -> None:
    """Write strict JSON atomically (temporary file, then rename): a kill leaves old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(obj) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """A results file, strict or from before strict JSON (``NaN``/``Infinity`` read as None)."""
    return json.loads(Path(path).read_text(), parse_constant=lambda _: None)


def fmt(x, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{nd}g}" if isinstance(x, float) else str(x)


def cell(text) -> str:
    """A markdown table cell: a literal '|' (as in |G|/|T|) must not split the row."""
    return str(text).replace("|", "\\|")


def finite(xs) -> List[float]:
    return [float(x) for x in xs if x is not None and math.isfinite(float(x))]


def mean(xs) -> float:
    xs = finite(xs)
    return sum(xs) / len(xs) if xs else math.nan


def sd(xs) -> float:
    """Sample standard deviation (n - 1); NaN for fewer than two values (no spread)."""
    xs = finite(xs)
    if len(xs) < 2:
        return math.nan
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def derive_rows(results: Dict[str, Any], order: List[Stage]) -> Dict[str, Any]:
    """Each stage's claim rows computed again from its raw numbers (current rule, definitions)."""
    for st in order:
        if st.name in results:
            results[st.name]["rows"] = strict(st.rows(results[st.name]))
    return results


def verdict_table(results: Dict[str, Any], order: List[Stage]) -> List[str]:
    lines = [
        "| stage | paper | claim | paper's number | ours | control | spread | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for st in order:
        stage = st.name
        if stage not in results:  # an older run, or --only: the claims are there, unmeasured
            lines.append(f"| {stage} | - | {cell(st.title)} | - | - | - | - | **not run** |")
        for r in (results.get(stage) or {}).get("rows", []):
            cells = [stage, r["table"], r["claim"], r["paper"], r["ours"], r["control"] or "-",
                     r["spread"], f"**{r['verdict']}**"]  # fmt: skip
            lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return lines


def predates(results: Dict[str, Any], order: List[Stage]) -> List[str]:
    """Lines naming the numbers of each stage measured before a definition fix the stage now
    applies: a stage's JSON records the fixes it ran with (``fixes``), older ones record none."""
    out = []
    for st in order:
        res = results.get(st.name)
        if res is None:
            continue
        done = set(res.get("fixes") or ())
        for key, what in st.fixes.items():
            if key not in done:
                out.append(f"- {st.name}: {what}")
    return out


def render_report(cfg: ReproConfig, manifest: Dict, results: Dict[str, Any], plots: Path,
                  image_prefix: str = "") -> str:  # fmt: skip
    """The markdown of the report; one PNG per stage that ran is written into ``plots``."""
    order = list(stages())
    src = results.get("source")
    budget = {k: v for k, v in asdict(BUDGETS[cfg.budget]).items() if k != "name"}
    for st in order:  # a stage's knobs, unless its result predates them (ran without them)
        ran = (results.get(st.name) or {}).get("budget")
        budget.update({k: v[cfg.budget] for k, v in st.knobs.items()
                       if st.name not in results or (ran is not None and k in ran)})  # fmt: skip
    started = manifest.get("started")
    lines = [
        f"# cherry-mlx repro: {cfg.model}, budget {cfg.budget}",
        "",
        f"Budget {cfg.budget}: "
        + ", ".join(f"{k} {v}" for k, v in budget.items())
        + "; each stage's `--set` overrides are in the table below.",
        "",
        (f"Started {started}; " if started else "")
        + "seeds per arm and `--set` overrides per stage in the table below; stage wall time "
        f"{_hours(results, order)}. Source: "
        + (
            f"trained from scratch for {src['steps']} full-loss steps."
            if src
            else "MODEL as given."
        ),
        f"Verdict rule: {RULE}; fewer than 2 values (no spread) is inconclusive, except "
        "deterministic measurements (spread 'exact'), compared directly. "
        f"In 'ours', {SPREAD}; a single value is marked (n=1).",
    ]
    old = predates(results, order)
    if old:
        lines += ["", "**Numbers measured before a definition was corrected** (rerun the stage "
                  "with `--redo` to measure them as defined now):", ""] + old  # fmt: skip
    lines += ["", "| stage | seconds | seeds | `--set` |", "| --- | --- | --- | --- |"]
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
            lines.append("not run (excluded by --only, added after this run, or not finished yet)")
            continue
        lines += st.section(results[st.name])
        png = plot_stage(st, results[st.name], Path(plots) / f"{st.name}.png")
        lines += ["", f"![{st.name}]({image_prefix}{png.name})"]
    return "\n".join(lines) + "\n"


def _hours(results: Dict[str, Any], order: List[Stage]) -> str:
    """Total of the recorded stage seconds (reruns replaced by ``--redo`` are not in it)."""
    names = ["source", *(s.name for s in order)]
    secs = sum(finite([results[n].get("seconds") for n in names if n in results]))
    return f"{secs:.0f} s ({secs / 3600:.2f} h, sum of the stages below)"


def write_report(out: Path, cfg: ReproConfig, manifest: Dict, results: Dict[str, Any]) -> Path:
    """``out/report.md`` and one PNG per stage that ran."""
    out = Path(out)
    path = out / "report.md"
    path.write_text(render_report(cfg, manifest, results, out))
    return path


def report_only(out: Path) -> Path:
    """Rewrite ``out``'s report, plots and ``results.json`` from the stage results already there
    (``results/STAGE.json``, else ``results.json``), verdicts derived again; nothing is trained.
    The stage files are rewritten as strict JSON with the new rows."""
    out = Path(out)
    folder = out / "results"
    combined = out / "results.json"
    if folder.is_dir() and any(folder.glob("*.json")):
        results = {p.stem: read_json(p) for p in sorted(folder.glob("*.json"))}
        manifest = read_json(out / "repro.json") if (out / "repro.json").is_file() else {}
    elif combined.is_file():
        data = read_json(combined)
        results, manifest = data["stages"], {k: v for k, v in data.items() if k != "stages"}
    else:
        raise FileNotFoundError(f"-o {out}: no results/*.json or results.json to report on; "
                                "pass the directory of a repro run")  # fmt: skip
    key = manifest.get("key") or {}
    if "model" not in key or key.get("budget") not in BUDGETS:
        raise ValueError(f"-o {out}: its results name no model and budget (key); not a repro")
    order = list(stages())
    derive_rows(results, order)
    if folder.is_dir():
        for name, res in results.items():
            write_json(folder / f"{name}.json", res)
    write_json(combined, {**manifest, "stages": results})
    cfg = ReproConfig(model=key["model"], budget=key["budget"])
    return write_report(out, cfg, manifest, results)


def error_bars(vals: List[List[float]]):
    """(bar indices, sample sds) of the bars that have a spread: two or more finite values. A
    bar of one value gets no error bar at all (not a zero-height one)."""
    idx = [i for i, v in enumerate(vals) if len(finite(v)) >= 2]
    return idx, [sd(vals[i]) for i in idx]


def plot_stage(stage: Stage, res: Dict[str, Any], path: Path) -> Path:
    """One bar chart per stage: the quantity its main claim is about (``Stage.plot``), the mean
    of each bar's values with ± one sample standard deviation where it has two or more."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, vals, ylabel = stage.plot(res)
    means = [mean(v) for v in vals]
    ns = [len(finite(v)) for v in vals]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(range(len(labels)), means, color="#c0392b", alpha=0.8)
    spread, sds = error_bars(vals)
    if spread:
        ax.errorbar(spread, [means[i] for i in spread], yerr=sds, fmt="none", ecolor="black",
                    capsize=3)  # fmt: skip
    ax.set_xticks(range(len(labels)), [f"{lab}\nn={n}" for lab, n in zip(labels, ns)],
                  fontsize=7, rotation=20)  # fmt: skip
    ax.set_ylabel(ylabel)
    note = "error bars: ± 1 sd (n - 1)" if spread else "one value per bar: no error bars"
    ax.set_title(f"{stage.title}\n{note}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
