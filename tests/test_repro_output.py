"""``repro -o DIR`` follows the project's output policy, and its bad option values are one-line
errors before any work. Each test is named after the behaviour it guards."""

import dataclasses
import importlib
import json
import os

import pytest

from cherry_mlx.evaluation.verdict import claim_row
from cherry_mlx.pipelines import repro
from cherry_mlx.pipelines.config import ReproConfig


def _snapshot(root):
    """{relative path: bytes} of every file under ``root``."""
    return {
        os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
        for d, _, files in os.walk(root)
        for f in files
    }


def _rows(res):
    return res["rows"]


def _section(res):
    return [f"{len(res['rows'])} rows"]


def _plot(res):
    return ["a"], [[1.0]], "value"


@pytest.fixture
def fake_stages(monkeypatch, tmp_path):
    """Every stage replaced by one that records its call (the real ones run in the slow test),
    the source and the data context faked: what is left is the directory handling."""
    calls = []
    from cherry_mlx.pipelines.stage import names

    for name in names():
        mod = importlib.import_module(f"cherry_mlx.pipelines.stages.{name}")

        def run(ctx, name=name):
            calls.append(name)
            return {"rows": [claim_row("T", f"{name} claim", "p", [1.0, 2.0], threshold=0.0)]}

        monkeypatch.setattr(mod, "STAGE", dataclasses.replace(
            mod.STAGE, run=run, rows=_rows, section=_section, plot=_plot
        ))  # fmt: skip
    monkeypatch.setattr(repro, "_source", lambda cfg, out, log: tmp_path / "source")
    monkeypatch.setattr(repro, "build_context", lambda cfg, out, src: object())
    return calls


def _user_dir(tmp_path):
    """A folder of the user's that happens to use repro's names (R21, R23)."""
    user = tmp_path / "userdir"
    (user / "results").mkdir(parents=True)
    (user / "results" / "sgt.json").write_text('{"mine": 1}')
    (user / "report.md").write_text("# my report\n")
    (user / "results.json").write_text('{"mine": 2}')
    (user / "important.txt").write_text("keep me\n")
    return user


def test_repro_refuses_a_folder_it_did_not_write(tmp_path, fake_stages):
    user = _user_dir(tmp_path)
    before = _snapshot(user)
    with pytest.raises(ValueError, match="holds no repro") as err:
        repro.run_repro(ReproConfig(only="quant", out=str(user)), log=lambda *_: None)
    assert "\n" not in str(err.value) and "--force" in str(err.value)
    assert fake_stages == [] and _snapshot(user) == before


def test_repro_force_never_replaces_the_users_files(tmp_path, fake_stages):
    user = _user_dir(tmp_path)
    before = _snapshot(user)
    with pytest.raises(ValueError, match="report.md, results, results.json"):
        repro.run_repro(ReproConfig(only="quant", out=str(user), force=True))
    assert fake_stages == [] and _snapshot(user) == before
    # a folder of other files: --force adds repro's beside them, touching none
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me\n")
    with pytest.raises(ValueError, match="holds no repro"):
        repro.run_repro(ReproConfig(only="quant", out=str(mine)))
    repro.run_repro(ReproConfig(only="quant", out=str(mine), force=True), log=lambda *_: None)
    assert fake_stages == ["quant"]
    assert (mine / "notes.txt").read_text() == "keep me\n"
    assert (mine / "repro.json").is_file() and (mine / "report.md").is_file()
    # now the folder holds a repro: it resumes without --force
    repro.run_repro(ReproConfig(only="quant,sgt", out=str(mine)), log=lambda *_: None)
    assert fake_stages == ["quant", "sgt"]


def test_repro_never_writes_into_its_source_or_a_file(tmp_path, fake_stages, tiny_config):
    from cherry_mlx.models import build_model
    from cherry_mlx.models.loading import save_model

    src = save_model(build_model(tiny_config), tmp_path / "m", tiny_config)
    with pytest.raises(ValueError, match="is the source"):
        repro.run_repro(ReproConfig(model=str(src), only="quant", out=str(src), force=True))
    assert not (src / "repro.json").exists()
    note = tmp_path / "notes.txt"
    note.write_text("mine\n")
    with pytest.raises(ValueError, match="is a file"):
        repro.run_repro(ReproConfig(only="quant", out=str(note), force=True))
    assert note.read_text() == "mine\n" and fake_stages == []


@pytest.mark.parametrize(
    "kw, bad",
    [
        (dict(model=os.path.join("nowhere", "nonexistent-model")), "nonexistent-model"),
        (dict(data=os.path.join("nowhere", "data")), "no train.jsonl"),
    ],
)
def test_a_repro_that_fails_up_front_leaves_no_claim(tmp_path, fake_stages, kw, bad):
    """R25, R26, R29: the bad model or data is one line, nothing is written, and the corrected
    rerun with the same -o runs (nothing claims the folder for the bad settings)."""
    out = tmp_path / "r25"
    with pytest.raises((ValueError, FileNotFoundError), match=bad) as err:
        repro.run_repro(ReproConfig(only="sgt", out=str(out), **kw), log=lambda *_: None)
    assert "\n" not in str(err.value)
    assert not out.exists() and fake_stages == []
    repro.run_repro(ReproConfig(only="quant", out=str(out)), log=lambda *_: None)
    assert fake_stages == ["quant"]
    assert json.loads((out / "repro.json").read_text())["key"]["model"] == "cherry-tiny"


def test_a_repro_that_fails_before_any_result_unclaims_the_folder(tmp_path, monkeypatch):
    def no_source(cfg, out, log):
        raise ValueError("the source failed")

    monkeypatch.setattr(repro, "_source", no_source)
    existing = tmp_path / "empty"
    existing.mkdir()
    for out in (tmp_path / "new", existing):
        with pytest.raises(ValueError, match="the source failed"):
            repro.run_repro(ReproConfig(only="sgt", out=str(out)), log=lambda *_: None)
    assert not (tmp_path / "new").exists()
    assert existing.is_dir() and not any(existing.iterdir())  # the user's folder stays


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(only=",,,"), "--only ',,,': names no stage"),
        (dict(only=" , "), "--only ' , ': names no stage"),
        (dict(redo=","), "--redo ',': names no stage"),
        (dict(set=",,"), "--set ',,': give NAME=VALUE"),
        (dict(only="sgt,bogus"), "--only bogus: unknown stage"),
        (dict(seeds=0), "--seeds 0: must be >= 1"),
        (dict(set="steps=-3"), "must be positive"),
    ],
)
def test_bad_repro_options_are_one_line_errors_before_any_work(kw, msg):
    with pytest.raises(ValueError) as err:
        ReproConfig(**kw)
    assert msg in str(err.value) and "\n" not in str(err.value)


def test_repro_cli_only_commas_exits_with_one_line(tmp_path):
    """R04 as typed: no training, no folder, an error exit, one line."""
    import subprocess
    import sys

    out = tmp_path / "x04"
    res = subprocess.run(
        [sys.executable, "-c", "from cherry_mlx_cli.main import main; main()", "repro",
         "--only", ",,,", "--set", "steps=1", "-o", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode != 0, res.stderr
    errors = [x for x in res.stderr.splitlines() if "names no stage" in x]
    assert len(errors) == 1 and "Traceback" not in res.stderr
    assert not out.exists()


def test_repro_and_quantize_settings_import_no_mlx_and_no_stage():
    """--help reads these settings: listing the stages must not import them (nor MLX)."""
    import subprocess
    import sys

    code = (
        "import sys; import cherry_mlx.pipelines.config as c, cherry_mlx.pipelines.quantize_config;"
        "print('mlx.core' in sys.modules, any(m.startswith('cherry_mlx.pipelines.stages.') "
        "for m in sys.modules), c.registry.names())"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    from pathlib import Path

    import cherry_mlx.pipelines.stages as pkg

    files = tuple(sorted(p.stem for p in Path(pkg.__file__).parent.glob("[!_]*.py")))
    assert "anchor" in files and "loops" in files and "sgt" in files
    assert res.stdout.strip() == f"False False {files}", res
