"""SSGT retention (paper Table 11): how much of a taught moment one model keeps relative to another.

Two SSGT evaluation reports (``cherry-mlx ssgt-eval --json``) are compared metric by metric:

- ``reference`` is the model that has the moment: the SSGT-trained model, before further
  non-SSGT training (does the moment survive it?), or the full-causal model (the paper's
  Table 11, where SSGT at 0.5B reaches 116.9% "retention" of full-causal quality);
- ``candidate`` is the one measured against it: the same model after further training, or the
  SSGT model.

Retention of a rate is ``candidate / reference`` for metrics where higher is better and
``(1 - candidate) / (1 - reference)`` (the share of good outcomes kept) where lower is better, so
100% means nothing was lost and above 100% means the candidate does better. Its 95% interval is
Katz's log interval for a ratio of two independent binomial proportions. Given the ``baseline``
(the model before SSGT), ``gain_retention = (candidate - baseline) / (reference - baseline)`` is the
share of the SSGT improvement that survived (for either direction of metric).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional

from cherry_mlx._io import read_json
from cherry_mlx.evaluation.ssgt_eval import METRICS, Z95

BETTER = {m.name: m.better for m in METRICS}


def ratio_ci(k1: int, n1: int, k2: int, n2: int, z: float = Z95):
    """Katz 95% interval of (k2/n2) / (k1/n1); None when a count is 0 (no finite log bound)."""
    if min(k1, k2) == 0:
        return None
    r = (k2 / n2) / (k1 / n1)
    se = math.sqrt(1 / k1 - 1 / n1 + 1 / k2 - 1 / n2)
    return [r * math.exp(-z * se), r * math.exp(z * se)]


def _metric_retention(name: str, ref: Dict, cand: Dict, base: Optional[Dict]) -> Dict:
    out = {"reference": ref.get("rate"), "candidate": cand.get("rate"), "retention": None}
    out.update({"ci95": None, "gain_retention": None})
    if ref.get("rate") is None or cand.get("rate") is None:
        return out  # nothing counted on one side
    k1, n1, k2, n2 = ref["k"], ref["n"], cand["k"], cand["n"]
    if BETTER.get(name, "higher") == "lower":  # keep the good outcomes: 1 - rate
        k1, k2 = n1 - k1, n2 - k2
    if k1 > 0:
        out["retention"] = (k2 / n2) / (k1 / n1)
        out["ci95"] = ratio_ci(k1, n1, k2, n2)
    if base is not None and base.get("rate") is not None:
        gain = ref["rate"] - base["rate"]
        if gain != 0:
            out["gain_retention"] = (cand["rate"] - base["rate"]) / gain
    return out


def retention(reference: Dict, candidate: Dict, baseline: Optional[Dict] = None) -> Dict:
    """Per-metric retention of ``candidate`` relative to ``reference`` (overall rates of two
    ``ssgt-eval`` reports, optionally the pre-SSGT ``baseline`` for the share of the gain)."""
    ref, cand = reference["overall"], candidate["overall"]
    base = baseline["overall"] if baseline is not None else {}
    return {
        name: _metric_retention(name, ref[name], cand[name], base.get(name) if baseline else None)
        for name in ref
        if name in cand
    }


def load_report(path: str | Path) -> Dict:
    """An ``ssgt-eval --json`` report."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} is missing: write one with cherry-mlx ssgt-eval --json {p}")
    report = read_json(p, "ssgt-eval report")  # one line naming the file, not a bare JSON error
    if not isinstance(report, dict) or not isinstance(report.get("overall"), dict):
        raise ValueError(f"{p} is not an ssgt-eval report (no 'overall' rates)")
    return report


def format_retention(rows: Dict) -> str:
    """Markdown table of the retention rows."""

    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    lines = [
        "| metric | reference | candidate | retention [95% CI] | share of SSGT gain kept |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        ci = "" if r["ci95"] is None else f" [{pct(r['ci95'][0])}, {pct(r['ci95'][1])}]"
        lines.append(
            f"| {name} | {pct(r['reference'])} | {pct(r['candidate'])} | "
            f"{pct(r['retention'])}{ci} | {pct(r['gain_retention'])} |"
        )
    return "\n".join(lines)


def retention_command(cfg, log=print) -> Dict:
    """``cherry-mlx ssgt-retention`` with a ``RetentionConfig``: print the retention table."""
    base = load_report(cfg.baseline) if cfg.baseline else None
    rows = retention(load_report(cfg.reference), load_report(cfg.candidate), base)
    log(format_retention(rows))
    return rows
