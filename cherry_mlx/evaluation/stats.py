"""Student's t distribution without scipy: the critical values of the verdict rule (``verdict.py``).

The CDF goes through the regularised incomplete beta function,

    P(T <= t) = 1 - I_x(df/2, 1/2) / 2,    x = df / (df + t²),   t >= 0

evaluated by its continued fraction (modified Lentz), which converges fast for x below the mean
of the beta distribution and otherwise after the symmetry I_x(a, b) = 1 - I_{1-x}(b, a). The
quantile inverts the CDF by bisection: a verdict needs a handful of them, so speed does not matter
and bisection cannot fail. ``df`` may be fractional (Welch-Satterthwaite degrees of freedom).
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple


def _beta_cf(a: float, b: float, x: float) -> float:
    """Continued fraction of I_x(a, b) (without its prefactor), modified Lentz."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                    -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):  # fmt: skip
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b) for a, b > 0, 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))  # fmt: skip
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_cf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_cf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` > 0 degrees of freedom."""
    if df <= 0 or not math.isfinite(df):
        raise ValueError(f"degrees of freedom must be positive and finite, got {df}")
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (0 < p < 1), by bisection on ``t_cdf``."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:  # df = 1 at p = 0.9995 needs ~640: grow until bracketed
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_var(xs: Sequence[float]) -> Tuple[int, float, float]:
    """(n, mean, sample variance with n - 1) of the finite values; NaN where undefined."""
    xs = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    n = len(xs)
    mean = sum(xs) / n if n else math.nan
    var = sum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else math.nan
    return n, mean, var


def welch_df(var_a: float, n_a: int, var_b: float, n_b: int) -> float:
    """Welch-Satterthwaite degrees of freedom of mean(a) - mean(b) with unequal variances."""
    qa, qb = var_a / n_a, var_b / n_b
    den = qa * qa / (n_a - 1) + qb * qb / (n_b - 1)
    if den == 0:  # both samples constant: no spread, any df gives the same (zero) threshold
        return float(n_a + n_b - 2)
    return (qa + qb) ** 2 / den
