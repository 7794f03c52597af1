"""The committed SmolLM2 reproduction: docs/repro-smollm2.md below its marker is exactly what
``docs.doc_text`` makes of the results.json beside it (verdicts derived again by the current rule),
and that file is strict JSON."""

import json
from pathlib import Path

import pytest

from cherry_mlx.pipelines.docs import MARK, doc_text

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_committed_report_is_generated_from_its_results(tmp_path):
    doc = DOCS / "repro-smollm2.md"
    want = doc_text(doc, write_plots=tmp_path)
    assert doc.read_text() == want, (
        "docs/repro-smollm2.md disagrees with docs/repro-smollm2/results.json: run "
        'python -c "from cherry_mlx.pipelines.docs import refresh_doc; '
        "refresh_doc('docs/repro-smollm2.md')\""
    )
    for stage in ("sgt", "compress", "mtp", "quant", "moee"):
        assert (tmp_path / f"{stage}.png").stat().st_size > 1000
        assert f"](repro-smollm2/{stage}.png)" in want


def test_committed_results_are_strict_json_with_the_rows_the_rule_gives():
    from cherry_mlx.evaluation.verdict import judge

    text = (DOCS / "repro-smollm2" / "results.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    for stage in data["stages"].values():
        for r in stage.get("rows", []):
            again = judge(r["values"], r["other"], r["threshold"], r["greater"], r["exact"])
            assert again == {k: r[k] for k in again}, r["claim"]


def test_doc_without_marker_is_refused(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("# hand-written only\n")
    with pytest.raises(ValueError, match="no line"):
        doc_text(doc)
    assert MARK.startswith("<!--")


def test_report_only_rederives_old_results_without_training(tmp_path):
    """``repro --report-only``: an old combined results.json (NaN literals, rows judged by the old
    rule) becomes strict JSON with rows the current rule gives, and a report; nothing runs."""
    from cherry_mlx.pipelines.config import ReproConfig
    from cherry_mlx.pipelines.repro import run_repro

    data = json.loads((DOCS / "repro-smollm2" / "results.json").read_text())
    moee = data["stages"]["moee"]
    for r in moee["rows"]:
        r["verdict"], r["se"] = "does not hold", float("nan")  # as the 2-se rule wrote it
    out = tmp_path / "old"
    out.mkdir()
    (out / "results.json").write_text(json.dumps(data))  # NaN literal: not strict JSON
    assert "NaN" in (out / "results.json").read_text()
    results = run_repro(ReproConfig(report_only=True, out=str(out)), log=lambda *_: None)
    assert [r["verdict"] for r in results["moee"]["rows"]] == ["inconclusive"] * 2
    text = (out / "results.json").read_text()
    assert "NaN" not in text and json.loads(text)["stages"]["moee"]["rows"][0]["df"] > 1
    report = (out / "report.md").read_text()
    assert "Welch" in report and "| moee | Table 7 |" in report
    assert not (out / "runs").exists() and (out / "moee.png").is_file()
    with pytest.raises(FileNotFoundError, match="no results"):
        run_repro(ReproConfig(report_only=True, out=str(tmp_path / "none")))
