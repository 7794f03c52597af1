"""README against the committed results: the generated SmolLM2 block is what ``docs.readme_text``
makes of docs/repro-smollm2/results.json, and Quick start's "about N tests" is near the number the
default test run collects."""

import re
from pathlib import Path

import pytest

from cherry_mlx.pipelines.docs import BEGIN, END, readme_block, readme_text

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "repro-smollm2" / "results.json"


def test_readme_summary_is_generated_from_the_committed_results():
    text = README.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert text == readme_text(README, RESULTS), (
        "README's repro block disagrees with docs/repro-smollm2/results.json: run "
        'python -c "from cherry_mlx.pipelines.docs import refresh_readme; '
        "refresh_readme('README.md')\""
    )


def test_readme_block_budget_fractions_hand_computed():
    """16 steps of 4 × 128 = 8,192 tokens: 500 / 16 = 31.25, 16,384,000 / 8,192 = 2,000."""
    from cherry_mlx.pipelines.docs import load

    results, manifest = load(RESULTS)
    block = readme_block(results, manifest["key"])
    assert "16 steps of 4 × 128 tokens (8,192 tokens: 1/31 of the paper's 500 steps" in block
    assert "1/2,000 of its 16.4M tokens" in block
    secs = sum(r["seconds"] for r in results.values())
    assert f"Wall time: {secs / 3600:.2f} h" in block
    for stage in ("sgt", "compress", "mtp", "quant", "moee"):
        for r in results[stage]["rows"][:1]:
            assert r["ours"] in block


def test_readme_test_count_is_about_right(request):
    """Checked in a run that collected every test module (the default ``python -m pytest``);
    a run of a few files cannot know the total and skips."""
    files = {p.name for p in (ROOT / "tests").glob("test_*.py")}
    items = request.session.items
    seen = {Path(str(i.fspath)).name for i in items}
    if len(files & seen) < 0.9 * len(files):  # a module of only slow tests is deselected
        pytest.skip("not a full test run: the total is unknown here")
    m = re.search(r"the test suite \(about ([\d,]+) tests", README.read_text())
    assert m, "Quick start must say 'the test suite (about N tests'"
    said, actual = int(m.group(1).replace(",", "")), len(items)
    assert abs(said - actual) <= max(25, 0.15 * actual), (
        f"README says about {said} tests, this run collected {actual}: update Quick start"
    )
