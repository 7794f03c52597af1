"""The one rule that turns a measured claim into "holds" / "does not hold" / "inconclusive".

A claim compares a quantity with another arm (two samples, e.g. SGT vs random over seeds) or with
a threshold (one sample, e.g. γ̄ > 0 over held-out batches). With d the measured difference in the
direction the claim predicts and s its standard error (sample standard deviations, n - 1),

    holds          d >  2·s
    does not hold  d < -2·s
    inconclusive   otherwise, or when a side has fewer than 2 values (no spread to judge by)

so a verdict needs the difference to exceed about two standard errors of the seed (or batch)
spread. A deterministic measurement (``exact=True``: perplexity of fixed weights, greedy output
identity) has no spread and is compared directly (s = 0, one value is enough).
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

HOLDS, FAILS, OPEN = "holds", "does not hold", "inconclusive"
RULE = "holds if the difference in the claimed direction exceeds 2 standard errors of its spread"


def _stats(xs: Sequence[float]):
    xs = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    n = len(xs)
    mean = sum(xs) / n if n else math.nan
    var = sum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else math.nan
    return n, mean, var


def judge(
    values: Sequence[float],
    other: Optional[Sequence[float]] = None,
    threshold: Optional[float] = None,
    greater: bool = True,
    exact: bool = False,
) -> Dict[str, object]:
    """Verdict of "mean(values) > mean(other)" (or "> threshold"); ``greater=False`` flips it.

    Returns ``{"verdict", "diff", "se", "n"}``; ``diff`` is signed so that positive supports the
    claim."""
    n, mean, var = _stats(values)
    if other is not None:
        m, mean_o, var_o = _stats(other)
        d = mean - mean_o
        se = 0.0 if exact else math.sqrt(var / max(n, 1) + var_o / max(m, 1))
        n_min = min(n, m)
    else:
        d = mean - (threshold if threshold is not None else 0.0)
        se = 0.0 if exact else math.sqrt(var / max(n, 1))
        n_min = n
    d = d if greater else -d
    if not math.isfinite(d) or (not exact and (n_min < 2 or not math.isfinite(se))):
        verdict = OPEN
    elif d > 2 * se:
        verdict = HOLDS
    elif d < -2 * se:
        verdict = FAILS
    else:
        verdict = OPEN
    return {"verdict": verdict, "diff": d, "se": se, "n": n_min}


def summary(values: Sequence[float], digits: int = 3) -> str:
    """``mean ± sd (n)`` of the finite values, or ``n/a``."""
    n, mean, var = _stats(values)
    if n == 0:
        return "n/a"
    if n == 1:
        return f"{mean:.{digits}g}"
    return f"{mean:.{digits}g} ± {math.sqrt(var):.{digits - 1}g} (n={n})"


def claim_row(
    table: str,
    claim: str,
    paper: str,
    values: Sequence[float],
    other: Optional[Sequence[float]] = None,
    threshold: Optional[float] = None,
    greater: bool = True,
    exact: bool = False,
    control: str = "",
    spread: str = "seeds",
) -> Dict[str, object]:
    """One report row: the paper's number, ours (with the values the verdict was computed from,
    so the report can be re-checked), the control, and the verdict of ``judge``."""
    values = [float(v) for v in values]
    other = None if other is None else [float(v) for v in other]
    return {
        "table": table, "claim": claim, "paper": paper, "ours": summary(values),
        "control": control, "values": values, "other": other, "threshold": threshold,
        "greater": greater, "exact": exact, "spread": "exact" if exact else spread,
        **judge(values, other, threshold, greater, exact),
    }  # fmt: skip
