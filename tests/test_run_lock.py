"""The live-run lock (``train.pid``: pid, host, process start) guards every run a trainer writes;
run names are names; a failed run leaves no half-made directory. Named after the findings."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from _train_helpers import base_cfg, run, synth_batches
from typer.testing import CliRunner

from cherry_mlx.models import build_model
from cherry_mlx.models.runs import PID_FILE, RunLock, live_trainer, open_run
from cherry_mlx.training import TrainCallback, resolve_config, train
from cherry_mlx.training.data import CycleBatches

HOLDER = """
import sys
from cherry_mlx.models.runs import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
sys.stdin.read()  # hold the lock until the parent closes stdin (or kills us)
"""


@pytest.fixture
def holder(tmp_path):
    """Start a process holding the lock of runs/busy; yields (run_dir, process)."""
    run_dir = tmp_path / "busy"
    run_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"  # an event, not a sleep
    yield run_dir, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_second_trainer_with_the_same_name_fails_naming_the_live_process(
    tmp_path, tiny_config, holder
):
    run_dir, proc = holder
    with pytest.raises(ValueError, match=f"being trained by process {proc.pid}") as err:
        run(base_cfg(tmp_path, name="busy", steps=2), tiny_config)
    assert "\n" not in str(err.value)
    # the lock itself (the check above is only the early, friendly one) names process and host
    with pytest.raises(ValueError, match=f"process {proc.pid} on {socket.gethostname()}"):
        RunLock(run_dir).acquire()
    assert sorted(os.listdir(run_dir)) == [PID_FILE]  # nothing written into the live run


def test_second_train_command_fails_in_one_line(tmp_path, holder):
    from cli.main import app

    res = CliRunner().invoke(app, ["train", "--runs-dir", str(tmp_path), "--name", "busy"])
    assert isinstance(res.exception, ValueError)
    assert f"process {holder[1].pid}" in str(res.exception) and "\n" not in str(res.exception)


def test_stale_lock_of_a_killed_run_is_taken_over_with_a_notice(
    tmp_path, tiny_config, holder, capfd
):
    run_dir, proc = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run_dir / PID_FILE).exists() and live_trainer(run_dir) is None
    res = run(base_cfg(tmp_path, name="busy", steps=2, save_every=2, eval_every=0), tiny_config)
    assert res.step == 2
    assert f"locked by process {proc.pid}, which is no longer running" in capfd.readouterr().err
    assert not (run_dir / PID_FILE).exists()  # released at the end


def test_lock_is_held_with_pid_and_host_while_training(tmp_path, tiny_config):
    seen = []

    class Peek(TrainCallback):
        def on_step(self, step, metrics):
            seen.append((tmp_path / "run" / PID_FILE).read_text().split())

    train(
        base_cfg(tmp_path, steps=2, save_every=2, eval_every=0),
        model=build_model(tiny_config),
        train_data=CycleBatches(synth_batches(2)),
        valid_data=[],
        callbacks=[Peek()],
    )
    assert seen and seen[0][:2] == [str(os.getpid()), socket.gethostname()]
    assert not (tmp_path / "run" / PID_FILE).exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_lock_naming_a_reused_pid_is_stale(tmp_path):
    # the parent process is alive, but it is not the process that wrote this lock
    (tmp_path / PID_FILE).write_text(f"{os.getppid()} {socket.gethostname()} 1\n")
    assert live_trainer(tmp_path) is None
    RunLock(tmp_path).acquire().release()


def test_lock_of_another_host_counts_as_live(tmp_path):
    (tmp_path / PID_FILE).write_text("1234 some-other-host 99\n")
    assert live_trainer(tmp_path) == 1234
    with pytest.raises(ValueError, match="process 1234 on some-other-host.*delete"):
        RunLock(tmp_path).acquire()


@pytest.mark.parametrize("name", ["../../x", "/abs/x", "a/b", "..", ".hidden", "a\\b", " "])
def test_run_names_with_separators_or_dots_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="is not a run name") as err:
        base_cfg(tmp_path, name=name)
    assert "\n" not in str(err.value)


def test_run_name_from_a_settings_file_is_checked_too(tmp_path):
    cfg_file = tmp_path / "s.yaml"
    cfg_file.write_text("name: ../../escaped\nsteps: 2\n")
    with pytest.raises(ValueError, match="is not a run name"):
        resolve_config({"runs_dir": str(tmp_path / "runs")}, cfg_file)
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()


def test_failed_run_leaves_no_half_made_run_dir(tmp_path, tiny_config):
    def broken(model, batch):
        raise RuntimeError("loss exploded")

    with pytest.raises(RuntimeError, match="loss exploded"):
        run(base_cfg(tmp_path, name="broken"), tiny_config, loss_fn=broken)
    assert not (tmp_path / "broken").exists()


def test_failure_after_the_first_checkpoint_keeps_the_run_and_frees_its_lock(tmp_path):
    run_dir = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        with open_run(run_dir):
            (run_dir / "checkpoints" / "step-2").mkdir(parents=True)
            (run_dir / "checkpoints" / "step-2" / "config.json").write_text("{}")
            raise KeyboardInterrupt
    assert (run_dir / "checkpoints" / "step-2").is_dir() and not (run_dir / PID_FILE).exists()


def test_existing_dir_that_is_not_a_run_is_not_trained_into(tmp_path, tiny_config):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(ValueError, match="not a run's"):
        run(base_cfg(tmp_path, name="mine", steps=2), tiny_config)
    assert os.listdir(tmp_path / "mine") == ["thesis.tex"]
