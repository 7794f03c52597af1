"""What a user of `cherry-mlx train` sees: the tokenizer they name is the one used, a wrong
--resume / --model / tokenizer size fails in one line naming the fix, Ctrl-C says how to resume."""

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cherry_mlx.models.loading import WEIGHTS_DIR, resolve
from cherry_mlx.training import TrainConfig
from cherry_mlx.training.evaluate import loss_breakdown
from cherry_mlx.training.prepare import find_tokenizer
from cherry_mlx.training.setup import _check_vocab, setup_run


def test_tokenizer_only_folder_is_used_not_silently_replaced(tmp_path):
    # `cherry-mlx tokenizer train -o DIR` writes tokenizer files without a config.json
    tok = tmp_path / "my_tok"
    tok.mkdir()
    shutil.copy(WEIGHTS_DIR / "cherry-tiny" / "tokenizer.json", tok / "tokenizer.json")
    assert find_tokenizer(TrainConfig(tokenizer=str(tok)).tokenizer) == tok


def test_missing_tokenizer_is_an_error_not_the_default(tmp_path):
    with pytest.raises(FileNotFoundError, match="--tokenizer"):
        find_tokenizer(TrainConfig(tokenizer=str(tmp_path / "nope")).tokenizer)


def test_resume_of_a_missing_run_names_it_once(tmp_path):
    cfg = TrainConfig(resume="runs/nope", runs_dir=str(tmp_path / "runs"))
    with pytest.raises(FileNotFoundError, match="no such run directory") as err:
        setup_run(cfg)
    assert "runs/runs" not in str(err.value)


class _FakeTok:
    def __len__(self):
        return 8000


def test_tokenizer_larger_than_the_embedding_fails_before_training():
    with pytest.raises(ValueError, match="8,000 tokens.*vocab_size 4,096"):
        _check_vocab(_FakeTok(), Path("tok"), {"vocab_size": 4096})
    _check_vocab(_FakeTok(), Path("tok"), {"vocab_size": 8000})  # fits: no error


def test_perplexity_of_a_huge_loss_does_not_overflow():
    import mlx.core as mx
    import mlx.nn as nn

    class Huge(nn.Module):
        def __call__(self, x):
            out = mx.full((*x.shape, 8), -1e4)
            return out.at[..., 0].add(2e4)  # every target except 0 is ~2e4 nats away

    batch = dict(
        inputs=mx.ones((1, 4), mx.int32),
        targets=mx.ones((1, 4), mx.int32),
        response=mx.ones((1, 4), mx.bool_),
        level=mx.zeros((1, 4), mx.int8),
        category=mx.full((1, 4), -1, mx.int8),
    )
    row = loss_breakdown(Huge(), [batch])
    assert row["total"] > 700 and row["ppl"] == row["ppl"]


def test_unreachable_hub_id_is_one_line(monkeypatch):
    import huggingface_hub

    def offline(*a, **k):
        raise OSError("ConnectError: no network\nAn error happened while trying ...\nmore")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ValueError) as err:
        resolve("runs/definitely-not-here")
    msg = str(err.value)
    assert "\n" not in msg and "not a local directory" in msg


def test_ctrl_c_says_how_to_resume(tmp_path, monkeypatch):
    import cherry_mlx.training as training
    from cli.main import app

    def interrupted(cfg, **kwargs):
        cfg.name = "r"
        step = tmp_path / "r" / "checkpoints" / "step-7"
        step.mkdir(parents=True)
        (step / "trainer_state.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train", interrupted)
    res = CliRunner().invoke(app, ["train", "--runs-dir", str(tmp_path), "--name", "r"])
    assert res.exit_code == 130
    out = res.output + (res.stderr if res.stderr_bytes is not None else "")
    assert "step-7" in out and f"--resume {tmp_path / 'r'}" in out


def test_resume_refuses_a_run_another_process_is_training(tmp_path):
    import subprocess
    import sys

    import mlx.core as mx

    from cherry_mlx.models.runs import PID_FILE

    run = tmp_path / "runs" / "busy"
    step = run / "checkpoints" / "step-2"
    step.mkdir(parents=True)
    (step / "trainer_state.json").write_text('{"step": 2}')
    (step / "config.json").write_text("{}")
    for name in ("model.safetensors", "optimizer.safetensors"):  # intact, so resumable
        mx.save_safetensors(str(step / name), {"w": mx.zeros((2,))})
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / PID_FILE).write_text(f"{other.pid}\n")
        cfg = TrainConfig(resume="latest", runs_dir=str(tmp_path / "runs"))
        with pytest.raises(ValueError, match=f"still being trained by process {other.pid}"):
            setup_run(cfg)
    finally:
        other.kill()
        other.wait()
    # the trainer died (SIGKILL leaves its pid file): resuming is allowed again
    run_dir, found = setup_run(TrainConfig(resume="latest", runs_dir=str(tmp_path / "runs")))
    assert run_dir == run and found.name == "step-2"


def test_reference_without_rho1_is_an_error_not_ignored():
    import pytest

    from cherry_mlx.training import TrainConfig

    with pytest.raises(ValueError, match="only used by --select rho1"):
        TrainConfig(select="gt", reference="runs/x").validate()
