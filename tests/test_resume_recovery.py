"""Resume survives damaged checkpoints (falls back to the newest intact one, and says so); a full
disk leaves nothing half-written. Named after the findings."""

import errno
import json
import shutil

import mlx.core as mx
import numpy as np
import pytest
from _train_helpers import base_cfg, run
from conftest import TINY

from cherry_mlx.models.runs import PID_FILE, damaged_checkpoint, list_checkpoints
from cherry_mlx.training import TrainConfig, resolve_config
from cherry_mlx.training.setup import setup_run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run stopped at step 4 with checkpoints step-2 and step-4, and the uninterrupted run."""
    root = tmp_path_factory.mktemp("runs")
    mx.random.seed(0)
    cfg = dict(save_every=2, keep_checkpoints=2, eval_every=0)
    part = run(base_cfg(root, name="part", stop_after=4, **cfg), dict(TINY))
    mx.random.seed(0)
    full = run(base_cfg(root, name="full", **cfg), dict(TINY))
    return root, part.run_dir, [r["loss"] for r in full.history]


def _copy(trained, tmp_path):
    dst = tmp_path / "part"
    shutil.copytree(trained[1], dst)
    return dst


def _truncate(f):
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


DAMAGES = {
    "truncated_model": lambda s: _truncate(s / "model.safetensors"),
    "empty_model": lambda s: (s / "model.safetensors").write_bytes(b""),
    "truncated_optimizer": lambda s: _truncate(s / "optimizer.safetensors"),
    "empty_optimizer": lambda s: (s / "optimizer.safetensors").write_bytes(b""),
    "garbled_trainer_state": lambda s: (s / "trainer_state.json").write_text('{"step": 4,'),
    "garbled_train_config": lambda s: (s / "train_config.json").write_text("{"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_resume_falls_back_to_the_newest_intact_checkpoint(trained, tmp_path, damage, capfd):
    run_dir = _copy(trained, tmp_path)
    step4 = run_dir / "checkpoints" / "step-4"
    assert damaged_checkpoint(step4) is None
    DAMAGES[damage](step4)
    assert damaged_checkpoint(step4) is not None
    found_dir, found = setup_run(TrainConfig(resume=str(run_dir)))
    assert (found_dir, found.name) == (run_dir, "step-2")
    err = capfd.readouterr().err
    assert "skipping damaged checkpoint" in err and "resuming from step-2" in err


def test_resume_with_every_checkpoint_damaged_is_one_line_error(trained, tmp_path):
    run_dir = _copy(trained, tmp_path)
    for step in list_checkpoints(run_dir):
        _truncate(step / "model.safetensors")
    with pytest.raises(ValueError, match="every checkpoint .* is damaged") as err:
        setup_run(TrainConfig(resume=str(run_dir)))
    assert "\n" not in str(err.value)


def test_resume_after_a_damaged_last_checkpoint_replays_the_uninterrupted_run(trained, tmp_path):
    run_dir = _copy(trained, tmp_path)
    _truncate(run_dir / "checkpoints" / "step-4" / "model.safetensors")
    (run_dir / "train_config.json").write_text('{"steps": ')  # the run-level copy, too
    cfg = resolve_config({"resume": str(run_dir)})
    assert cfg.steps == 8  # read from the newest checkpoint's copy
    resumed = run(cfg, dict(TINY))
    assert resumed.step == 8
    np.testing.assert_allclose([r["loss"] for r in resumed.history], trained[2], rtol=1e-6)
    assert damaged_checkpoint(run_dir / "checkpoints" / "step-8") is None


def _leftovers(root):
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if ".tmp-" in p.name or p.name.endswith(".partial") or p.name.startswith(f".{PID_FILE}")
    )


def _full_disk(monkeypatch, when):
    """mx.save_safetensors writes half a file, then fails with ENOSPC, for paths ``when`` picks."""
    real = mx.save_safetensors

    def save(path, arrays, metadata=None):
        if when(str(path)):
            with open(path, "wb") as fh:
                fh.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, arrays, metadata=metadata) if metadata else real(path, arrays)

    monkeypatch.setattr(mx, "save_safetensors", save)


def test_disk_full_before_the_first_checkpoint_leaves_nothing(tmp_path, monkeypatch):
    _full_disk(monkeypatch, lambda p: True)
    with pytest.raises(OSError, match="No space left"):
        run(base_cfg(tmp_path, name="full-disk", save_every=2), dict(TINY))
    assert not (tmp_path / "full-disk").exists()
    assert _leftovers(tmp_path) == []


def test_disk_full_later_keeps_the_intact_checkpoint_and_no_half_written_files(
    tmp_path, monkeypatch
):
    _full_disk(monkeypatch, lambda p: "step-4" in p and "optimizer" in p)
    with pytest.raises(OSError, match="No space left"):
        run(base_cfg(tmp_path, name="r", save_every=2, eval_every=0), dict(TINY))
    run_dir = tmp_path / "r"
    assert [c.name for c in list_checkpoints(run_dir)] == ["step-2"]
    assert damaged_checkpoint(run_dir / "checkpoints" / "step-2") is None
    assert _leftovers(tmp_path) == [] and not (run_dir / PID_FILE).exists()
    json.loads((run_dir / "train_config.json").read_text())
    monkeypatch.undo()
    assert run(resolve_config({"resume": str(run_dir)}), dict(TINY)).step == 8


def test_disk_full_is_one_line_on_the_command_line(monkeypatch, capsys):
    import cli.main as main

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/r/metrics.jsonl")

    monkeypatch.setattr(main, "app", full)
    with pytest.raises(SystemExit) as exit_:
        main.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == "cherry-mlx: error: No space left on device: runs/r/metrics.jsonl\n"
