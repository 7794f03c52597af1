"""The run layout, in one place: what lives where under ``runs/NAME/``.

    runs/NAME/
        train_config.json          the resolved training settings
        train.pid                  present while a trainer process writes the run
        metrics.jsonl, evals.jsonl, curves.png
        checkpoints/step-N/        full step checkpoints (model + optimizer + trainer state)
        best/                      the best evaluated model (a plain model directory)
        model/                     what ``compress`` / ``fuse`` write (a plain model directory)
        tokenizer/                 the run's own copy of its tokenizer

Every command that takes a model accepts a run directory and reads the model it stands for
(``resolve_run_checkpoint``); commands called without a model default to the newest run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

RUNS_DIR = Path(os.environ.get("CHERRY_MLX_RUNS", "runs"))
CHECKPOINTS = "checkpoints"
BEST = "best"
MODEL = "model"
PID_FILE = "train.pid"
TRAINER_STATE = "trainer_state.json"


def step_dir(run_dir: Path, step: int) -> Path:
    """``run_dir/checkpoints/step-N``."""
    return Path(run_dir) / CHECKPOINTS / f"step-{int(step)}"


def _step_of(path: Path) -> Optional[int]:
    name = path.name
    return int(name[5:]) if name.startswith("step-") and name[5:].isdigit() else None


def step_dirs(run_dir: Path, marker: str = "config.json") -> List[Path]:
    """Step directories of a run holding ``marker``, oldest first."""
    found = [
        p
        for p in (Path(run_dir) / CHECKPOINTS).glob("step-*")
        if _step_of(p) is not None and (p / marker).is_file()
    ]
    return sorted(found, key=_step_of)


def list_checkpoints(run_dir: Path) -> List[Path]:
    """Complete step checkpoints of a run (with trainer state, so resumable), oldest first."""
    return step_dirs(run_dir, TRAINER_STATE)


def resolve_run_checkpoint(run_dir: Path) -> Optional[Path]:
    """The model directory a run stands for: its ``best`` checkpoint, else the ``model/`` that
    compress/fuse write, else its latest step."""
    run_dir = Path(run_dir)
    for sub in (BEST, MODEL):
        if (run_dir / sub / "config.json").is_file():
            return run_dir / sub
    steps = step_dirs(run_dir)
    return steps[-1] if steps else None


def latest_run(runs_dir: Optional[Path] = None, require_model: bool = False) -> Optional[Path]:
    """Most recently modified run directory (under ``RUNS_DIR`` by default), for commands called
    without a model.

    ``require_model`` skips directories that hold no loadable model yet (a run killed before its
    first checkpoint, an experiment folder of several runs): what commands that load a model want.
    """
    runs_dir = RUNS_DIR if runs_dir is None else runs_dir
    if not Path(runs_dir).is_dir():
        return None
    runs = [p for p in Path(runs_dir).iterdir() if p.is_dir() and not p.name.startswith(".")]
    if require_model:
        runs = [
            p
            for p in runs
            if (p / "config.json").is_file() or resolve_run_checkpoint(p) is not None
        ]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def latest_trained_run(runs_dir: Optional[Path] = None) -> Optional[Path]:
    """The newest run that has a checkpoint (experiment folders of several runs are skipped)."""
    runs_dir = Path(RUNS_DIR if runs_dir is None else runs_dir)
    runs = [p for p in runs_dir.glob("*") if p.is_dir() and not p.name.startswith(".")]
    runs = [p for p in runs if resolve_run_checkpoint(p) is not None]
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def run_of(path: Path) -> Optional[Path]:
    """The run a checkpoint belongs to (``runs/NAME/checkpoints/step-N`` or ``runs/NAME/best``)."""
    path = Path(path)
    if path.parent.name == CHECKPOINTS:
        return path.parent.parent
    if path.name == BEST and (path.parent / CHECKPOINTS).is_dir():
        return path.parent
    return None


def checkpoint_step(path: Path) -> Optional[int]:
    """Training step a checkpoint directory was saved at: meta.json (``step``, or ``best.step``
    in a run's ``best/``), trainer_state.json, else the ``step-N`` name."""
    for name in ("meta.json", TRAINER_STATE):
        f = Path(path) / name
        if f.is_file():
            try:
                meta = json.loads(f.read_text())
                step = meta.get("step", (meta.get("best") or {}).get("step"))
            except (json.JSONDecodeError, AttributeError):
                step = None
            if isinstance(step, int):
                return step
    return _step_of(Path(path))


def step_checkpoint(run: Path, step: int) -> Path:
    """``run/checkpoints/step-N`` or a ValueError listing the steps the run kept."""
    path = step_dir(run, step)
    if (path / "config.json").is_file():
        return path
    kept = [_step_of(p) for p in step_dirs(run)]
    raise ValueError(
        f"{run} has no checkpoint at step {step} (kept: {kept or 'none'}); train it with "
        f"--save-every dividing {step} and enough --keep-checkpoints, or pass a checkpoint dir"
    )


def source_name(model_dir) -> str:
    """Readable name of a model directory: a run's name for runs/NAME/best or .../step-N."""
    p = Path(model_dir).resolve()
    if p.name == BEST or p.name.startswith("step-"):
        p = p.parent.parent if p.parent.name == CHECKPOINTS else p.parent
    return p.name


def live_trainer(run_dir: Path) -> Optional[int]:
    """The id of another live process training ``run_dir`` (from its ``train.pid``), else None.
    A pid file left by a killed run names a dead process and is ignored."""
    try:
        pid = int((Path(run_dir) / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, owned by someone else
        return pid
    return pid
