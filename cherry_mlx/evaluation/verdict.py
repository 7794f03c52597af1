"""The one rule that turns a measured claim into "holds" / "does not hold" / "inconclusive".

A claim compares a quantity with another arm (two samples, e.g. SGT vs random over seeds) or with
a threshold (one sample, e.g. γ̄ > 0 over held-out batches). With d the measured difference in the
direction the claim predicts, s its standard error (sample standard deviations, n - 1) and t* the
two-sided 95% critical value of Student's t at the right degrees of freedom,

    holds          d >  t*·s
    does not hold  d < -t*·s
    inconclusive   otherwise, or when a side has fewer than 2 values (no spread to judge by)

that is, a verdict when the 95% confidence interval of the difference excludes zero. Two arms:
Welch's t (unequal variances, Welch-Satterthwaite df), one arm against a threshold: df = n - 1.
At small n the t critical value is what keeps the rule honest: with two seeds per arm t* is
12.7 (df 1) to 4.3 (df 2), where the old "two standard errors" rule claimed ~95% with 2.
A deterministic measurement (``exact=True``: perplexity of fixed weights, greedy output identity)
has no spread and is compared directly (s = 0, one value is enough).
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

from cherry_mlx.evaluation.stats import mean_var, t_quantile, welch_df

HOLDS, FAILS, OPEN = "holds", "does not hold", "inconclusive"
LEVEL = 0.95  # two-sided confidence of the interval that must exclude zero
RULE = (
    "holds if the 95% confidence interval of the difference lies wholly on the side the claim "
    "predicts, does not hold if wholly on the other side (Welch's t for two arms, one-sample t "
    "against a threshold: |d| > t*(df)·se)"
)
SPREAD = "± is one sample standard deviation (n - 1) over the n values named beside it"


def judge(
    values: Sequence[float],
    other: Optional[Sequence[float]] = None,
    threshold: Optional[float] = None,
    greater: bool = True,
    exact: bool = False,
) -> Dict[str, object]:
    """Verdict of "mean(values) > mean(other)" (or "> threshold"); ``greater=False`` flips it.

    Returns ``{"verdict", "diff", "se", "df", "t_crit", "n"}``; ``diff`` is signed so that
    positive supports the claim; ``df``/``t_crit`` are None where no t test applies (exact, or
    too few values)."""
    n, mean, var = mean_var(values)
    if other is not None:
        m, mean_o, var_o = mean_var(other)
        d = mean - mean_o
        n_min = min(n, m)
        se = math.sqrt(var / n + var_o / m) if n_min >= 2 else math.nan
        df = welch_df(var, n, var_o, m) if n_min >= 2 else math.nan
    else:
        d = mean - (threshold if threshold is not None else 0.0)
        n_min = n
        se = math.sqrt(var / n) if n >= 2 else math.nan
        df = float(n - 1) if n >= 2 else math.nan
    d = d if greater else -d
    if exact:
        se, df, crit = 0.0, math.nan, 0.0
    else:
        crit = t_quantile(0.5 + LEVEL / 2, df) if math.isfinite(df) and df > 0 else math.nan
    if not math.isfinite(d) or (not exact and (n_min < 2 or not math.isfinite(se * crit))):
        verdict = OPEN
    elif d > crit * se:
        verdict = HOLDS
    elif d < -crit * se:
        verdict = FAILS
    else:
        verdict = OPEN
    finite = lambda x: x if math.isfinite(x) else None  # noqa: E731  (strict JSON: null)
    return {"verdict": verdict, "diff": finite(d), "se": finite(se), "df": finite(df),
            "t_crit": None if exact else finite(crit), "n": n_min}  # fmt: skip


def summary(values: Sequence[float], digits: int = 3) -> str:
    """``mean ± sd (sd, n=N)`` of the finite values, the mean alone for one, or ``n/a``."""
    n, mean, var = mean_var(values)
    if n == 0:
        return "n/a"
    if n == 1:
        return f"{mean:.{digits}g} (n=1)"
    return f"{mean:.{digits}g} ± {math.sqrt(var):.{digits - 1}g} (sd, n={n})"


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
    values = [float(v) for v in values if v is not None]
    other = None if other is None else [float(v) for v in other if v is not None]
    ours = summary(values)
    if exact and len(values) == 1:
        ours = ours.removesuffix(" (n=1)")
    return {
        "table": table, "claim": claim, "paper": paper, "ours": ours,
        "control": control, "values": values, "other": other, "threshold": threshold,
        "greater": greater, "exact": exact, "spread": "exact" if exact else spread,
        **judge(values, other, threshold, greater, exact),
    }  # fmt: skip
