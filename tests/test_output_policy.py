"""One output policy for every command that writes (``models.outputs.check_output``), checked
the same way for each: never over the folder holding its source, never over a training run, a
foreign folder only with --force and then keeping the user's files, and ``-o $PWD`` likewise.
(``repro`` is left out here: its output folder is a pipeline's run folder, tested with it.)"""

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cherry_mlx.models import build_model
from cherry_mlx.models.loading import save_model
from cherry_mlx.models.presets import WEIGHTS_DIR

write_gguf = pytest.importorskip("test_gguf").write_gguf


def _snapshot(root):
    return {
        os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
        for d, _, files in os.walk(root)
        for f in files
    }


def _cli(args):
    from cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


# command -> (make its source inside folder ``d`` and return it, the arguments writing to OUT)
def _gguf(d, cfg):
    write_gguf(d / "m.gguf")
    return d / "m.gguf"


def _model(d, cfg):
    return save_model(build_model(cfg), d / "model", cfg)


def _corpus(d, cfg):
    rng = __import__("random").Random(0)
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(2, 7)))
             for _ in range(400)]  # fmt: skip
    rows = [{"text": " ".join(rng.choice(words) for _ in range(12))} for _ in range(600)]
    (d / "c.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return d / "c.jsonl"


def _tokenizer(d, cfg):
    return Path(shutil.copy(WEIGHTS_DIR / "cherry-tiny" / "tokenizer.json", d / "tokenizer.json"))


WRITERS = {
    "import": (_gguf, lambda src, out: ["import", src, "-o", out]),
    "quantize": (_model, lambda src, out: ["quantize", src, "-o", out, "--eval-batches", "0"]),
    "tokenizer train": (
        _corpus,
        lambda src, out: [
            "tokenizer",
            "train",
            "-d",
            src,
            "--vocab-size",
            "500",
            "--no-required-hangul",
            "-o",
            out,
        ],
    ),  # fmt: skip
    "data build": (
        _tokenizer,
        lambda src, out: [
            "data",
            "build",
            "--scale",
            "0.01",
            "--no-prose",
            "--tokenizer",
            src,
            "-o",
            out,
        ],
    ),  # fmt: skip
}


def _foreign(d):
    (d / "sub").mkdir(parents=True)
    (d / "thesis.txt").write_text("mine")
    (d / "sub" / "data.csv").write_text("1,2\n")
    return d


def _run(d, cfg):
    model = build_model(cfg)
    save_model(model, d / "checkpoints" / "step-2", cfg)
    save_model(model, d / "best", cfg)
    (d / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n')
    return d


@pytest.mark.parametrize("command", list(WRITERS))
def test_writing_command_never_writes_over_its_source_folder(tmp_path, tiny_config, command):
    make, args = WRITERS[command]
    box = tmp_path / "box"
    box.mkdir()
    src = make(box, tiny_config)
    (box / "notes.txt").write_text("mine")
    before = _snapshot(box)
    for force in ([], ["--force"]):
        res = _cli(args(src, box) + force)
        assert isinstance(res.exception, ValueError), res.output
        assert "source" in str(res.exception)
    assert _snapshot(box) == before


@pytest.mark.parametrize("command", list(WRITERS))
def test_writing_command_never_writes_over_a_training_run(tmp_path, tiny_config, command):
    make, args = WRITERS[command]
    (tmp_path / "s").mkdir()
    src = make(tmp_path / "s", tiny_config)
    run = _run(tmp_path / "run", tiny_config)
    before = _snapshot(run)
    res = _cli(args(src, run) + ["--force"])
    assert isinstance(res.exception, ValueError), res.output
    assert _snapshot(run) == before


@pytest.mark.parametrize("cwd", [False, True], ids=["foreign", "pwd"])
@pytest.mark.parametrize("command", list(WRITERS))
def test_writing_command_into_a_foreign_folder_needs_force_and_keeps_user_files(
    tmp_path, tiny_config, command, cwd, monkeypatch
):
    make, args = WRITERS[command]
    (tmp_path / "s").mkdir()
    src = make(tmp_path / "s", tiny_config)
    box = _foreign(tmp_path / "proj")
    out = box
    if cwd:  # -o "$PWD" from inside the folder
        monkeypatch.chdir(box)
        out = Path(os.getcwd())
    before = _snapshot(box)
    res = _cli(args(src, out))
    assert isinstance(res.exception, ValueError) and "--force" in str(res.exception), res.output
    assert _snapshot(box) == before
    res = _cli(args(src, out) + ["--force"])
    assert res.exit_code == 0, res.output
    after = _snapshot(box)
    assert {k: after.get(k) for k in before} == before  # every user file still there, unchanged
    assert len(after) > len(before)  # and the command's own output written beside them
    assert not [p for p in tmp_path.rglob(".*.tmp-*")]  # no staging folder left behind
