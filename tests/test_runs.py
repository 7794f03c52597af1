"""Which model a run directory stands for, and which run commands default to."""

import os
import time

from cherry_mlx.models.runs import latest_run, resolve_run_checkpoint


def _model_dir(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def test_best_then_model_then_highest_step(tmp_path):
    run = tmp_path / "r"
    for step in (3, 10, 7):
        _model_dir(run / "checkpoints" / f"step-{step}")
    assert resolve_run_checkpoint(run).name == "step-10"  # numeric, not lexical, order
    _model_dir(run / "model")
    assert resolve_run_checkpoint(run) == run / "model"
    _model_dir(run / "best")
    assert resolve_run_checkpoint(run) == run / "best"
    assert resolve_run_checkpoint(tmp_path / "empty") is None


def test_latest_run_with_a_model_skips_folders_without_one(tmp_path):
    trained = tmp_path / "trained"
    _model_dir(trained / "checkpoints" / "step-5")
    compressed = tmp_path / "compressed"
    _model_dir(compressed / "model")
    experiment = tmp_path / "experiment"  # several runs inside, nothing loadable at its top
    _model_dir(experiment / "sgt" / "best")
    now = time.time()
    for i, p in enumerate((trained, compressed, experiment)):
        os.utime(p, (now + i, now + i))
    assert latest_run(tmp_path) == experiment
    assert latest_run(tmp_path, require_model=True) == compressed
    assert latest_run(tmp_path / "missing") is None
