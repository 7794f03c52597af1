"""The run layout, in one place: what lives where under ``runs/NAME/``.

    runs/NAME/
        train_config.json          the resolved training settings
        train.pid                  the live-run lock: PID HOST START of the trainer writing it
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
import shutil
import socket
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

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


def check_run_name(name: Optional[str]) -> Optional[str]:
    """``name`` if it names a directory directly under the runs directory, else a ValueError:
    a separator, ``..``, an absolute path or a leading dot would write elsewhere or hide the run."""
    if name is None:
        return None
    text = str(name)
    seps = [c for c in ("/", "\\", os.sep, os.altsep or "/", "\0") if c in text]
    if not text.strip() or seps or text.startswith(".") or Path(text).is_absolute():
        raise ValueError(
            f"--name {text!r} is not a run name: give one directory name, without path "
            f"separators or a leading dot (the run goes to <runs dir>/NAME; set the parent "
            f"with --runs-dir)"
        )
    return text


def _proc_start(pid: int) -> Optional[str]:
    """Start time of process ``pid`` (Linux /proc), to tell a live holder from a reused pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _read_lock(run_dir: Path) -> Optional[Tuple[int, str, Optional[str]]]:
    """(pid, host, start) from ``train.pid`` (``PID HOST START``; a bare pid from older runs)."""
    try:
        parts = (Path(run_dir) / PID_FILE).read_text().split()
        return int(parts[0]), (parts[1] if len(parts) > 1 else ""), (parts[2:3] or [None])[0]
    except (OSError, ValueError, IndexError):
        return None


def _holder_alive(pid: int, host: str, start: Optional[str]) -> bool:
    if host and host != socket.gethostname():
        return True  # another machine's process: it cannot be checked from here, assume alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        pass
    now = _proc_start(pid)
    return start in (None, "-") or now is None or now == start


def live_trainer(run_dir: Path) -> Optional[int]:
    """The id of another live process training ``run_dir`` (from its ``train.pid``), else None.
    A pid file left by a killed run names a dead process (or a reused pid) and is ignored."""
    held = _read_lock(run_dir)
    if held is None or (held[0] == os.getpid() and held[1] in ("", socket.gethostname())):
        return None
    return held[0] if _holder_alive(*held) else None


def _busy(run_dir: Path, held) -> ValueError:
    pid, host, _ = held
    where = f" on {host}" if host else ""
    return ValueError(
        f"run {run_dir} is being trained by process {pid}{where}; wait for it or stop it, or "
        f"choose another --name (if that process is gone, delete {Path(run_dir) / PID_FILE})"
    )


class RunLock:
    """The live-run lock of a run directory: ``train.pid`` holding ``PID HOST START``, created
    exclusively. A lock whose process is gone (killed run) is taken over with a notice."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / PID_FILE
        self.held = False

    def acquire(self, notice=None) -> "RunLock":
        me = f"{os.getpid()} {socket.gethostname()} {_proc_start(os.getpid()) or '-'}\n"
        for _ in range(3):
            # Written whole under a private name, then hard-linked into place: the link fails if
            # a lock exists, and no reader ever sees a half-written one.
            mine = self.path.with_name(f".{PID_FILE}.{os.getpid()}")
            mine.write_text(me)
            try:
                os.link(mine, self.path)
            except FileExistsError:
                held = _read_lock(self.run_dir)
                if held is not None and held[0] != os.getpid() and _holder_alive(*held):
                    raise _busy(self.run_dir, held) from None
                if held is not None and held[0] != os.getpid() and notice is not None:
                    notice(f"note: {self.run_dir} was left locked by process {held[0]}, which "
                           "is no longer running; taking it over")  # fmt: skip
                self.path.unlink(missing_ok=True)
                continue
            finally:
                mine.unlink(missing_ok=True)
            self.held = True
            return self
        raise ValueError(f"could not lock {self.run_dir}: {self.path} keeps reappearing")

    def release(self) -> None:
        held = _read_lock(self.run_dir)
        if self.held and (held is None or held[0] == os.getpid()):
            self.path.unlink(missing_ok=True)
        self.held = False


@contextmanager
def open_run(run_dir: Path, notice=None) -> Iterator[Path]:
    """Create (if needed) and lock ``run_dir`` for one trainer process; on failure before the
    first checkpoint, remove the directory again if this process created it (no half-made
    runs). The lock is released whatever happens."""
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        lock = RunLock(run_dir).acquire(notice)
    except BaseException:
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    try:
        yield run_dir
    except BaseException:
        lock.release()
        if created and not step_dirs(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    lock.release()


def damaged_checkpoint(path: Path) -> Optional[str]:
    """Why a step checkpoint cannot be resumed (empty/truncated safetensors, unreadable JSON),
    or None when it is intact. Reads headers and sizes only, not the weights."""
    path = Path(path)
    for name in (TRAINER_STATE, "train_config.json", "config.json"):
        f = path / name
        if name == "train_config.json" and not f.exists():
            continue
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError) as err:
            return f"{name} is unreadable ({type(err).__name__})"
        if not isinstance(data, dict) or (name == TRAINER_STATE and "step" not in data):
            return f"{name} is incomplete"
    weights = "adapters.safetensors" if (path / "adapters.safetensors").exists() else None
    for name in ("model.safetensors", "optimizer.safetensors", weights):
        if name is not None and not _safetensors_ok(path / name):
            return f"{name} is missing, empty or truncated"
    return None


def _safetensors_ok(f: Path) -> bool:
    """The header parses and the file is as long as its tensors say."""
    try:
        with open(f, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                return False
            n = struct.unpack("<Q", head)[0]
            size = os.fstat(fh.fileno()).st_size
            if n > size - 8:
                return False
            header = json.loads(fh.read(n))
        ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    except (OSError, ValueError, struct.error, AttributeError, KeyError, TypeError, IndexError):
        return False
    return size == 8 + n + max(ends, default=0)
