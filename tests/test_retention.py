"""SSGT retention (Table 11) against hand-computed values."""

import json
import math

import pytest

from cherry_mlx.evaluation.retention import format_retention, load_report, retention
from cherry_mlx.evaluation.ssgt_eval import rate


def _report(**counts):
    return {"overall": {name: rate(k, n) for name, (k, n) in counts.items()}}


def test_retention_by_hand():
    base = _report(self_correction_rate=(12, 100), jailbreak_success_rate=(23, 100))
    taught = _report(self_correction_rate=(47, 100), jailbreak_success_rate=(4, 100))
    later = _report(self_correction_rate=(40, 100), jailbreak_success_rate=(10, 100))
    rows = retention(taught, later, baseline=base)
    sc, jb = rows["self_correction_rate"], rows["jailbreak_success_rate"]
    assert sc["retention"] == pytest.approx(40 / 47)  # 85.1% of the rate kept
    assert sc["gain_retention"] == pytest.approx(0.28 / 0.35)  # 80% of the +35 pp gain kept
    # Katz: se = sqrt(1/47 - 1/100 + 1/40 - 1/100) = 0.162101; 0.851064 * exp(-+1.96 se)
    lo, hi = sc["ci95"]
    assert lo == pytest.approx(0.851064 * math.exp(-1.959964 * 0.162101), rel=1e-5)
    assert hi == pytest.approx(0.851064 * math.exp(1.959964 * 0.162101), rel=1e-5)
    # lower is better: 96% refused when taught, 90% later -> 93.75% kept; gain -13 of -19 pp
    assert jb["retention"] == pytest.approx(0.90 / 0.96)
    assert jb["gain_retention"] == pytest.approx(0.13 / 0.19)


def test_paper_style_retention_above_100_and_empty_counts():
    """Table 11's reading: SSGT against full causal; 76 vs 65 of 100 is 116.9%."""
    full = _report(correction_accuracy=(65, 100), false_refusal_rate=(0, 0))
    ssgt = _report(correction_accuracy=(76, 100), false_refusal_rate=(0, 0))
    rows = retention(full, ssgt)
    assert round(100 * rows["correction_accuracy"]["retention"], 1) == 116.9
    assert rows["correction_accuracy"]["gain_retention"] is None  # no baseline given
    assert rows["false_refusal_rate"]["retention"] is None  # nothing counted
    table = format_retention(rows)
    assert "| correction_accuracy | 65.0% | 76.0% | 116.9% [" in table


def test_load_report_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="ssgt-eval --json"):
        load_report(tmp_path / "none.json")
    (tmp_path / "x.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(ValueError, match="not an ssgt-eval report"):
        load_report(tmp_path / "x.json")


@pytest.mark.parametrize("text", ["{garbage", "[1, 2]", "3", '{"overall": 5}'])
def test_a_garbled_report_is_one_line_naming_the_file(tmp_path, text):
    """R03r: garbage JSON used to raise a bare JSON error that named no file."""
    path = tmp_path / "garbage.json"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        load_report(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_cli_prints_the_table(tmp_path):
    from cherry_mlx_cli.main import app
    from typer.testing import CliRunner

    for name, k in (("a", 47), ("b", 40), ("base", 12)):
        (tmp_path / f"{name}.json").write_text(json.dumps(_report(self_correction_rate=(k, 100))))
    args = ["ssgt-retention", str(tmp_path / "a.json"), str(tmp_path / "b.json")]
    res = CliRunner().invoke(app, args + ["--baseline", str(tmp_path / "base.json")])
    assert res.exit_code == 0, res.output
    assert (
        "| self_correction_rate | 47.0% | 40.0% | 85.1% [" in res.output
        and "| 80.0% |" in res.output
    )
