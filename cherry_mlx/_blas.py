"""Use a fast BLAS under MLX on Linux without the user doing anything.

The Linux ``mlx-cpu`` wheel links a bundled *reference* BLAS (fp32 matmul ~4-5 GFLOP/s on a
2-core machine); Debian's OpenBLAS runs the same matmul at 130-300 GFLOP/s. Loading OpenBLAS with
``RTLD_GLOBAL`` *before* ``mlx.core`` is imported puts its ``cblas_*``/``sgemm_`` symbols first in
the global lookup scope, so when ``libmlx.so`` is loaded its BLAS calls bind to OpenBLAS: the same
effect as ``LD_PRELOAD`` with no re-exec. ``cherry_mlx/__init__.py`` calls ``install()``, which
does this when mlx is first imported (nothing is loaded by a process that never imports mlx, or
that said with ``skip()`` that it multiplies no matrices).

Set ``CHERRY_MLX_FAST_BLAS=0`` to turn it off, or to a library path or name to use instead.

Decode-shaped products (1..8 activation rows) go further, through ``_smallm.c``: a
``cblas_sgemm`` compiled on first use (any C compiler, cached under ~/.cache/cherry-mlx) that
streams each weight row once for them, since OpenBLAS's sgemm packs the whole weight matrix first
(a SmolLM2 decode step: 118 ms there, 62-78 ms here). It is made global ahead of OpenBLAS only
once OpenBLAS's sgemm and sgemv are resolved and handed to it; any failure on the way (no
compiler, a compile error, an unwritable cache, a library that is not a BLAS) leaves it unloaded
with a one-line notice. ``CHERRY_MLX_SMALL_GEMM=0`` turns it off; ``=untiled`` keeps it but
computes one dot product at a time, as before its register tiles (a speculative verify pass over
K + 1 rows then costs up to ~1.8 plain steps instead of ~1.1-1.3; same results).
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import importlib.abc
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ENV = "CHERRY_MLX_FAST_BLAS"
SMALL_ENV = "CHERRY_MLX_SMALL_GEMM"
APT_HINT = "apt-get install libopenblas0-pthread"
_OFF = ("0", "off", "false", "no")
_AUTO = ("", "1", "on", "true", "yes", "auto")

# Debian/Ubuntu multiarch locations first (pthread build before openmp: MLX has its own threads).
_CANDIDATES = [
    "/usr/lib/{arch}-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/{arch}-linux-gnu/openblas-openmp/libopenblas.so.0",
    "/usr/lib/{arch}-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
    "/usr/local/lib/libopenblas.so.0",
]

# -march=native: built on the machine that runs it (the cache key includes the CPU's features).
# The kernel is vectorised by hand with one fixed summation order; no reassociation flags, so the
# compiler cannot sum one (m, n) differently depending on how many rows a product has.
_CFLAGS = ["-O3", "-march=native", "-fno-math-errno", "-ffp-contract=fast", "-shared", "-fPIC"]
_SMALLM_SRC = Path(__file__).with_name("_smallm.c")
# /proc/cpuinfo lines naming what -march=native builds for (x86 and aarch64).
_CPU_KEYS = (b"flags", b"model name", b"Features", b"CPU implementer", b"CPU part", b"CPU variant")

# What happened, for tests and benchmarks: "unknown" (not yet), "skipped", "preloaded",
# "not-needed", "disabled", "missing", "too-late" or "failed".
status: str = "unknown"
library: str | None = None
# The decode-shaped sgemm shim: the loaded library, or None with the reason in ``smallm_status``.
smallm: ctypes.CDLL | None = None
smallm_status: str = "off"
_targets: list = []  # OpenBLAS's cblas_sgemm and cblas_sgemv, as handed to the shim


def _say(msg: str) -> None:
    if not os.environ.get("CHERRY_MLX_QUIET"):
        print(f"[cherry-mlx] {msg}", file=sys.stderr)


class _BeforeMlx(importlib.abc.MetaPathFinder):
    """Loads the fast BLAS when mlx is first imported, then lets the usual finders import it."""

    def find_spec(self, name, path=None, target=None):
        if name == "mlx" or name.startswith("mlx."):
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            ensure_fast_blas()
        return None


def install() -> None:
    """Load the fast BLAS just before mlx is first imported (at once if it already is)."""
    if "mlx.core" in sys.modules:
        ensure_fast_blas()  # too late: says so
    elif not any(isinstance(f, _BeforeMlx) for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforeMlx())


def skip() -> None:
    """This process multiplies no matrices (``info``, ``plan``, ...): load and compile nothing."""
    global status
    if status == "unknown":
        status = "skipped"


def _reference_blas_bundled() -> bool:
    """True when the installed mlx-cpu wheel carries its own (slow) reference libblas."""
    for base in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path}:
        if base and glob.glob(os.path.join(base, "mlx_cpu.libs", "libblas*.so*")):
            return True
    return False


def find_openblas() -> str | None:
    arch = os.uname().machine
    for pattern in _CANDIDATES:
        path = pattern.format(arch=arch)
        if os.path.exists(path):
            return path
    return None


def ensure_fast_blas() -> str:
    """Load OpenBLAS globally before mlx if the reference BLAS would be used; return the status."""
    global status, library
    if status != "unknown":
        return status
    setting = os.environ.get(ENV, "1").strip()
    if sys.platform != "linux":
        status = "not-needed"  # macOS uses Accelerate
    elif setting.lower() in _OFF:
        status = "disabled"
    elif "blas" in os.environ.get("LD_PRELOAD", ""):
        status, library = "preloaded", os.environ["LD_PRELOAD"]
    elif not _reference_blas_bundled():
        status = "not-needed"  # e.g. a CUDA wheel or a source build against a system BLAS
    elif "mlx.core" in sys.modules:
        status = "too-late"
        _say(
            "mlx was imported before cherry_mlx, so its slow reference BLAS stays in use; "
            "import cherry_mlx first or set LD_PRELOAD to libopenblas.so.0"
        )
    else:
        path = find_openblas() if setting.lower() in _AUTO else setting
        if path is None:
            status = "missing"
            _say(
                f"fp32 matmul uses MLX's slow reference BLAS; for ~30x faster CPU runs: {APT_HINT}"
            )
        else:
            status = _preload(path)
    return status


def _preload(path: str) -> str:
    """Load ``path`` privately, check it is a BLAS, hand its sgemm/sgemv to the shim, then make
    the shim and the BLAS global in that order. Nothing is global until every step succeeded."""
    global library
    try:
        blas = ctypes.CDLL(path)  # RTLD_LOCAL: MLX cannot see it yet
        sgemm = _symbol(blas, "cblas_sgemm", path)
    except OSError as err:
        _say(f"could not load {ENV}={path} ({_first_line(err)}); MLX keeps its reference BLAS "
             f"(set {ENV} to an OpenBLAS such as libopenblas.so.0, or to 0)")  # fmt: skip
        return "failed"
    try:
        sgemv = _symbol(blas, "cblas_sgemv", path)
    except OSError:
        sgemv = None  # a BLAS without gemv: no decode-shaped path, plain preload
    if sgemv is not None:
        _load_smallm(sgemm, sgemv)
    try:
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL | os.RTLD_NOLOAD)
    except OSError as err:  # not expected once loaded; the shim (if any) still forwards to it
        _say(f"could not make {path} global ({_first_line(err)}); MLX keeps its reference BLAS")
        return "failed"
    library = path
    if not os.environ.get("_CHERRY_MLX_BLAS_SAID"):
        os.environ["_CHERRY_MLX_BLAS_SAID"] = "1"  # once per process tree
        _say(f"using {path} for MLX's CPU matmul (set {ENV}=0 to turn off)")
    return "preloaded"


def _symbol(lib: ctypes.CDLL, name: str, path: str) -> ctypes.c_void_p:
    try:
        return ctypes.cast(getattr(lib, name), ctypes.c_void_p)
    except AttributeError:
        raise OSError(f"{path} has no {name}: not a BLAS library") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else repr(err)


def _load_smallm(sgemm: ctypes.c_void_p, sgemv: ctypes.c_void_p) -> None:
    """Build and load the shim privately, connect it, and only then make it global."""
    global smallm, smallm_status
    if os.environ.get(SMALL_ENV, "1").strip().lower() in _OFF:
        smallm_status = "disabled"
        return
    so = None
    try:
        so = _build_smallm()
        shim = ctypes.CDLL(str(so))
        shim.cherry_smallm_set(sgemm, sgemv)
        ctypes.CDLL(str(so), mode=ctypes.RTLD_GLOBAL | os.RTLD_NOLOAD)
    except (OSError, AttributeError, subprocess.SubprocessError) as err:
        if so is not None and not isinstance(err, subprocess.SubprocessError):
            so.unlink(missing_ok=True)  # a broken cached build: the next run compiles it again
        smallm_status = f"unavailable ({_first_line(err)})"
        _say(f"decode-shaped matmuls stay on OpenBLAS's sgemm: {smallm_status}")
        return
    _targets[:] = [sgemm, sgemv]
    smallm, smallm_status = shim, "on"
    if os.environ.get(SMALL_ENV, "").strip().lower() == "untiled":
        use_tiled_kernel(False)


def _compiler() -> tuple[list[str], bytes]:
    """The C compiler command (``$CC`` or cc/gcc on PATH) and its ``--version`` output."""
    cc = shlex.split(os.environ.get("CC", "")) or [shutil.which("cc") or shutil.which("gcc") or ""]
    found = shutil.which(cc[0]) if cc[0] else None
    if found is None:
        raise OSError("no C compiler (apt-get install gcc, or set CC)")
    cc[0] = os.path.realpath(found)
    out = subprocess.run([*cc, "--version"], capture_output=True, timeout=60)
    if out.returncode != 0:
        raise OSError(f"{cc[0]} --version failed: {_first_line(out.stderr.decode() or '?')}")
    return cc, out.stdout


def smallm_key(cc: list[str], version: bytes, cpuinfo: bytes | None = None) -> str:
    """Cache key of a build: source, flags, compiler and its version, machine and CPU features
    (``/proc/cpuinfo``'s x86 flags or aarch64 Features and part: what -march=native targets)."""
    if cpuinfo is None:
        proc = Path("/proc/cpuinfo")
        cpuinfo = proc.read_bytes() if proc.exists() else b""
    # every distinct line over all cores (big.LITTLE cores may differ), not the clock readings
    cpu = sorted({ln for ln in cpuinfo.splitlines() if ln.split(b":")[0].strip() in _CPU_KEYS})
    parts = [_SMALLM_SRC.read_bytes(), " ".join(_CFLAGS).encode(), " ".join(cc).encode(),
             version, os.uname().machine.encode(), *cpu]  # fmt: skip
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def _build_smallm() -> Path:
    """Compile ``_smallm.c`` once per key into the user's cache (atomic rename)."""
    cc, version = _compiler()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cherry-mlx"
    out = base / f"smallm-{smallm_key(cc, version)}.so"
    if out.exists():
        return out
    base.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=base)
    os.close(fd)
    try:
        res = subprocess.run([*cc, *_CFLAGS, "-o", tmp, str(_SMALLM_SRC), "-lpthread", "-lm"],
                             capture_output=True, timeout=120)  # fmt: skip
        if res.returncode != 0 or os.path.getsize(tmp) == 0:
            why = _first_line(res.stderr.decode(errors="replace") or "produced nothing")
            raise OSError(f"{cc[0]} could not build {_SMALLM_SRC.name}: {why}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def smallm_counts() -> tuple[int, int]:
    """(products taken by the decode-shaped path, products left to sgemm) in this process."""
    if smallm is None:
        return 0, 0
    a, b = ctypes.c_long(), ctypes.c_long()
    smallm.cherry_smallm_counts(ctypes.byref(a), ctypes.byref(b))
    return a.value, b.value


def use_small_gemm(on: bool) -> bool:
    """Switch the decode-shaped path on or off in this process (benchmarks compare both in one
    run); False when it is not loaded (nothing to switch). Off, every product goes to OpenBLAS's
    sgemm."""
    if smallm is None:
        return False
    smallm.cherry_smallm_set(_targets[0], _targets[1] if on else None)
    return True


def use_tiled_kernel(on: bool) -> bool:
    """Switch the decode-shaped path between its register tiles (several rows of A and of W per
    pass over K; attention's P @ V in the kernel too) and the untiled path it replaced (one dot
    product at a time, which sums in the same order; OpenBLAS gemv per row for B as stored);
    False when the shim is not loaded. For benchmarks: both arms in one process."""
    if smallm is None:
        return False
    smallm.cherry_smallm_tiled(int(on))
    return True
