"""The verdict rule's statistics (Student's t without scipy) against closed forms, published
table values and numpy integration of the density; strict JSON results; error bars only where
there is a spread."""

import json
import math
import statistics

import numpy as np
import pytest

from cherry_mlx.evaluation.stats import betainc, t_cdf, t_quantile, welch_df
from cherry_mlx.evaluation.verdict import claim_row, judge, summary
from cherry_mlx.pipelines.report import dumps, error_bars, read_json, write_json


def test_betainc_closed_forms():
    for x in (0.0, 0.1, 0.5, 0.93, 1.0):
        assert betainc(1.0, 1.0, x) == pytest.approx(x, abs=1e-12)  # uniform
        assert betainc(3.0, 1.0, x) == pytest.approx(x**3, abs=1e-12)  # I_x(a, 1) = x^a
        assert betainc(1.0, 2.5, x) == pytest.approx(1 - (1 - x) ** 2.5, abs=1e-12)


def test_t_quantile_closed_forms_and_tables():
    p = 0.975
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)  # Cauchy
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)
    # two-sided 95% values of printed t tables
    for df, table in ((3, 3.182), (4, 2.776), (5, 2.571), (10, 2.228), (30, 2.042)):
        assert t_quantile(p, df) == pytest.approx(table, abs=5e-4)
    normal = statistics.NormalDist().inv_cdf(p)
    assert t_quantile(p, 1e7) == pytest.approx(normal, abs=1e-5)
    assert t_quantile(0.025, 4) == pytest.approx(-t_quantile(0.975, 4))


@pytest.mark.parametrize("df", [1.0, 1.37, 3.0, 12.5])
def test_t_cdf_matches_numpy_integration_of_the_density(df):
    """Fractional df (Welch) included: the density integrated with the trapezoid rule."""
    x = np.linspace(-400.0, 2.5, 2_000_001)
    logc = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    dens = np.exp(logc - (df + 1) / 2 * np.log1p(x * x / df))
    # the mass below -400 from the tail's leading term, c·df^((df+1)/2)·400^(-df)/df (matters
    # only at df = 1, where it is 1/(400π))
    below = math.exp(logc) * df ** ((df + 1) / 2) * 400.0 ** (-df) / df
    assert t_cdf(2.5, df) == pytest.approx(float(np.trapezoid(dens, x)) + below, abs=2e-6)


def test_welch_df_hand_computed():
    # a = [1, 2, 3, 4]: var 5/3, q_a = 5/12; b = [0, 10]: var 50, q_b = 25
    # df = (5/12 + 25)² / ((5/12)² / 3 + 25² / 1) = 646.0069 / 625.0579 = 1.03352
    assert welch_df(5 / 3, 4, 50.0, 2) == pytest.approx(646.00694 / 625.05787, rel=1e-6)
    v = judge([1, 2, 3, 4], [0, 10], greater=False)
    assert v["df"] == pytest.approx(1.03352, abs=1e-5)
    assert v["verdict"] == "inconclusive"  # d = 2.5, se = 5.04


def test_summary_says_what_the_spread_is():
    assert summary([1.0, 3.0]) == "2 ± 1.4 (sd, n=2)"
    assert summary([2.0]) == "2 (n=1)"
    assert summary([]) == "n/a"
    assert claim_row("T", "c", "p", [0.5], threshold=1.0, exact=True)["ours"] == "0.5"


def test_results_are_strict_json_and_old_files_still_read(tmp_path):
    row = claim_row("T", "c", "p", [1.0], threshold=0.0)  # one value: se and df undefined
    assert row["se"] is None and row["df"] is None
    obj = {"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}], "d": "x", "e": row}
    text = dumps(obj)
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict constant {c}"))
    write_json(tmp_path / "r.json", obj)
    new = read_json(tmp_path / "r.json")
    assert new["a"] is None and new["b"] == [1.0, None, {"c": None}] and new["e"] == row
    (tmp_path / "old.json").write_text('{"se": NaN, "x": [Infinity, 2.0]}')
    assert read_json(tmp_path / "old.json") == {"se": None, "x": [None, 2.0]}


def test_error_bars_only_where_there_is_a_spread():
    idx, sds = error_bars([[1.0], [1.0, 3.0], [], [2.0, None, math.nan], [4.0, 4.0, 7.0]])
    assert idx == [1, 4]
    assert sds == pytest.approx([math.sqrt(2), math.sqrt(3)])
