"""Where commands may write: one policy for every output directory (``-o``, run directories).

A command refuses a target that is its source or contains it, that holds a run, or that holds a
model or anything else (a non-empty directory) unless ``--force``. Even with ``--force`` it only
replaces entries bearing the names this project writes (``config.json``, ``model*.safetensors``,
tokenizer files, reports, run files): a user's other files stay, and a directory that is not
entirely ours is never removed. Directories are assembled under a hidden temporary sibling and
renamed into place, so a kill or a full disk never leaves a half-written model behind.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import secrets
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Iterable, Iterator, Optional

# Files copied along with a model so that the directory is self-contained (HF layout).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "generation_config.json",
)
# Names this project writes into model, run and report directories: the only entries --force
# may replace.
OWN_FILES = frozenset(
    {
        "config.json", "cherry_model.py", "meta.json", "train_config.json", "trainer_state.json",
        "adapters.safetensors", "optimizer.safetensors", "metrics.jsonl", "evals.jsonl",
        "curves.png", "train.pid", "report.json", "report.md", "stages.png",
        "compress_config.json", "fuse_report.json", "distill_report.json", "distill.png",
        "ablation.json", "ablation.md", "ablation.png", "cabstractor.safetensors",
        "cabstractor.json", "gguf_source.json", *TOKENIZER_FILES,
    }
)  # fmt: skip
OWN_DIRS = frozenset({"checkpoints", "best", "model", "tokenizer", "fused"})
OWN_PATTERNS = ("model*.safetensors", "step-*", ".*.tmp-*", ".*.partial", ".*.old-*")


def _own_name(name: str, own: frozenset = frozenset()) -> bool:
    return (
        name in OWN_FILES or name in own or any(fnmatch.fnmatchcase(name, p) for p in OWN_PATTERNS)
    )


def is_ours(path: Path, root: bool = True, own: frozenset = frozenset()) -> bool:
    """True when everything in ``path`` bears a name this project writes (recursively), so
    replacing it loses nothing of the user's. ``root``: the directory's own name is not checked;
    ``own``: further names the calling command writes (``data build``'s splits)."""
    path = Path(path)
    if path.is_symlink():
        return False
    if not root and not (_own_name(path.name, own) or (path.is_dir() and path.name in OWN_DIRS)):
        return False
    if path.is_dir():
        return all(is_ours(p, root=False, own=own) for p in path.iterdir())
    return True


def holds_run(path: Path) -> bool:
    """A training run's directory (checkpoints, a live trainer's pid file or its settings)."""
    path = Path(path)
    return (path / "checkpoints").is_dir() or (path / "train.pid").is_file()


def holds_model(path: Path) -> bool:
    path = Path(path)
    return (path / "config.json").is_file() or any(path.glob("model*.safetensors"))


def _what(path: Path) -> str:
    if holds_model(path):
        return "holds a model"
    names = sorted(p.name for p in path.iterdir())
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"is not empty ({len(names)} entries: {shown})"


def check_output(
    target: str | os.PathLike,
    sources: Iterable[str | os.PathLike] = (),
    force: bool = False,
    flag: str = "-o",
    weights_ok: bool = True,
) -> Path:
    """``target`` if a command may write there, else a ValueError naming it and the fix.

    Always refused: the source itself, a directory containing a source, a file, a run directory
    (and, unless ``weights_ok``, a directory with model weights: a tokenizer written into a
    trained model would no longer match its token ids). Refused unless ``force``: a directory
    that holds a model or anything else."""
    target = Path(target).expanduser()
    here = target.resolve()
    for src in sources:
        if src is None:
            continue
        s = Path(src).expanduser().resolve()
        if here == s or here in s.parents:
            what = "is the source" if here == s else "contains the source"
            raise ValueError(
                f"{flag} {target} {what} {src}: writing there would destroy the input; "
                f"choose another output directory"
            )
    if target.exists() and not target.is_dir():
        raise ValueError(f"{flag} {target} is a file, not a directory; choose another path")
    if not target.is_dir() or not any(target.iterdir()):
        return target
    if holds_run(target):
        raise ValueError(
            f"{flag} {target} holds a training run (checkpoints/); a model is never written over "
            f"a run, even with --force: choose another output directory"
        )
    if not weights_ok and any(target.glob("model*.safetensors")):
        raise ValueError(
            f"{flag} {target} holds a trained model; a new tokenizer there would no longer match "
            f"its token ids, even with --force: write the tokenizer to another directory"
        )
    if not force:
        raise ValueError(
            f"{flag} {target} {_what(target)}; choose another output directory, or pass "
            f"--force to replace only the files this command writes there"
        )
    return target


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _size(path: Path) -> int:
    total = 0
    for d, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(d, f)).st_size
    return total


def sweep_stale(out_dir: Path) -> int:
    """Remove the hidden ``.NAME.tmp-*`` / ``.NAME.old-*`` siblings of ``out_dir`` left by a killed
    run (their writer's pid is gone; names without a pid predate it) and say how much space that
    reclaimed. A live writer's folder is left alone. Returns the bytes reclaimed."""
    out_dir = Path(os.path.abspath(out_dir))
    parent = out_dir.parent
    if not parent.is_dir():
        return 0
    pattern = re.compile(re.escape(f".{out_dir.name}.") + r"(tmp|old)-(\d+)?")
    freed = 0
    for entry in parent.iterdir():
        m = pattern.match(entry.name)
        if not m or entry.is_symlink() or not entry.is_dir():
            continue
        if m.group(2) and _alive(int(m.group(2))):
            continue
        size = _size(entry)
        shutil.rmtree(entry, ignore_errors=True)
        if not entry.exists():
            freed += size
            print(
                f"[cherry-mlx] removed {entry} left by an interrupted run "
                f"({size / 2**20:,.1f} MB reclaimed)",
                file=sys.stderr,
            )
    return freed


def make_tmp_dir(out_dir: Path) -> Path:
    """A hidden, empty sibling of ``out_dir`` with the umask's permissions (``tempfile.mkdtemp``
    would make it 0700, and the renamed model directory with it). Stale siblings of a killed
    run are removed first (``sweep_stale``)."""
    out_dir = Path(os.path.abspath(out_dir))  # "." has no name to prefix
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out_dir)
    while True:
        tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises SystemExit while inside (main thread only), so cleanup code runs as it does
    for Ctrl-C instead of the process vanishing with its temporary folder."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def staged_dir(out_dir: Path, own: frozenset = frozenset()) -> Iterator[Path]:
    """A temporary sibling to assemble ``out_dir`` in, moved into place (``replace_dir``) when the
    block finishes; on an error, Ctrl-C or SIGTERM it is removed and the removal announced."""
    out_dir = Path(os.path.abspath(out_dir))
    with _sigterm_raises():
        tmp = make_tmp_dir(out_dir)
        try:
            yield tmp
            replace_dir(tmp, out_dir, own)
        except BaseException as err:
            if tmp.exists():
                size = _size(tmp)
                shutil.rmtree(tmp, ignore_errors=True)
                if isinstance(err, (KeyboardInterrupt, SystemExit)):
                    print(
                        f"[cherry-mlx] interrupted: removed the partial {tmp} "
                        f"({size / 2**20:,.1f} MB reclaimed); {out_dir} is unchanged",
                        file=sys.stderr,
                    )
            raise


def replace_dir(tmp: Path, out_dir: Path, own: frozenset = frozenset()) -> None:
    """Move the finished directory ``tmp`` to ``out_dir`` without losing anything not ours.

    A missing ``out_dir`` is a rename; one holding only our files is swapped whole (renamed aside,
    then removed); otherwise each entry of ``tmp`` replaces its namesake and stale weight shards
    and model shims are dropped, while every other entry of ``out_dir`` is left alone."""
    tmp, out_dir = Path(tmp), Path(out_dir)
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    if holds_run(out_dir):
        raise ValueError(f"{out_dir} holds a training run; a model is never written over a run")
    if is_ours(out_dir, own=own):
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
        return
    new = {p.name for p in tmp.iterdir()}
    stale = [
        e
        for e in out_dir.iterdir()
        if e.name not in new
        and (fnmatch.fnmatchcase(e.name, "model*.safetensors") or e.name == "cherry_model.py")
    ]
    for entry in [out_dir / n for n in new] + stale:
        if entry.is_dir() and not is_ours(entry, own=own):
            raise ValueError(
                f"{entry} is a directory that is not ours; move it away to write {out_dir}"
            )
    for entry in stale:
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    for name in sorted(new):
        dest = out_dir / name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(tmp / name, dest)
    tmp.rmdir()


def remove_own(path: Path, what: Optional[str] = None) -> None:
    """Delete ``path`` if it holds only our files (a previous output of the same command), else a
    ValueError: what is not ours is never deleted."""
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir() or not is_ours(path):
        raise ValueError(
            f"{path} holds files this project did not write; move it away to replace {what or 'it'}"
        )
    shutil.rmtree(path)
