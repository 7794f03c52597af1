"""Use a fast BLAS under MLX on Linux without the user doing anything.

The Linux ``mlx-cpu`` wheel links a bundled *reference* BLAS (fp32 matmul ~4-5 GFLOP/s on a
2-core machine); Debian's OpenBLAS runs the same matmul at 130-300 GFLOP/s. Loading OpenBLAS with
``RTLD_GLOBAL`` *before* ``mlx.core`` is imported puts its ``cblas_*``/``sgemm_`` symbols first in
the global lookup scope, so when ``libmlx.so`` is loaded its BLAS calls bind to OpenBLAS: the same
effect as ``LD_PRELOAD`` with no re-exec. This must therefore run before anything imports mlx,
which is why ``cherry_mlx/__init__.py`` calls it first.

Set ``CHERRY_MLX_FAST_BLAS=0`` to turn it off, or to a path to use that library instead.

Decode-shaped products (1..8 activation rows) go further, through ``_smallm.c``: a
``cblas_sgemm`` compiled on first use (any C compiler, cached under ~/.cache/cherry-mlx) and
loaded ahead of OpenBLAS that streams each weight row once for them, since OpenBLAS's sgemm packs
the whole weight matrix first (a SmolLM2 decode step: 118 ms there, 62-78 ms here).
``CHERRY_MLX_SMALL_GEMM=0`` turns it off; without a compiler it is skipped with a notice.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ENV = "CHERRY_MLX_FAST_BLAS"
APT_HINT = "apt-get install libopenblas0-pthread"

# Debian/Ubuntu multiarch locations first (pthread build before openmp: MLX has its own threads).
_CANDIDATES = [
    "/usr/lib/{arch}-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/{arch}-linux-gnu/openblas-openmp/libopenblas.so.0",
    "/usr/lib/{arch}-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
    "/usr/local/lib/libopenblas.so.0",
]

SMALL_ENV = "CHERRY_MLX_SMALL_GEMM"
# -march=native: built on the machine that runs it (the cache key includes the CPU's flags);
# reassociation lets the dot products vectorise (float sums in another order, as BLAS does).
_CFLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fassociative-math", "-fno-signed-zeros",
           "-fno-trapping-math", "-shared", "-fPIC"]  # fmt: skip
_SMALLM_SRC = Path(__file__).with_name("_smallm.c")

# What happened, for tests: "preloaded", "not-needed", "disabled",
# "missing", "too-late" or "failed".
status: str = "unknown"
library: str | None = None
# The decode-shaped sgemm shim: the loaded library, or None with the reason in ``smallm_status``.
smallm: ctypes.CDLL | None = None
smallm_status: str = "off"


def _say(msg: str) -> None:
    if not os.environ.get("CHERRY_MLX_QUIET"):
        print(f"[cherry-mlx] {msg}", file=sys.stderr)


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
    setting = os.environ.get(ENV, "1")
    if sys.platform != "linux":
        status = "not-needed"  # macOS uses Accelerate
    elif setting.lower() in ("0", "off", "false", "no"):
        status = "disabled"
    elif "LD_PRELOAD" in os.environ and "blas" in os.environ["LD_PRELOAD"]:
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
        path = setting if os.path.sep in setting else find_openblas()
        if path is None:
            status = "missing"
            _say(
                f"fp32 matmul uses MLX's slow reference BLAS; for ~30x faster CPU runs: {APT_HINT}"
            )
        else:
            try:
                shim = _load_smallm()  # before OpenBLAS: its cblas_sgemm must be found first
                blas = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                if shim is not None:
                    _connect_smallm(shim, blas)
                status, library = "preloaded", path
                if not os.environ.get("_CHERRY_MLX_BLAS_SAID"):
                    os.environ["_CHERRY_MLX_BLAS_SAID"] = "1"  # once per process tree
                    _say(f"using {path} for MLX's CPU matmul (set {ENV}=0 to turn off)")
            except OSError as err:
                status = "failed"
                _say(f"could not load {path} ({err}); MLX keeps its reference BLAS")
    return status


def smallm_counts() -> tuple[int, int]:
    """(products taken by the decode-shaped path, products left to sgemm) in this process."""
    if smallm is None:
        return 0, 0
    a, b = ctypes.c_long(), ctypes.c_long()
    smallm.cherry_smallm_counts(ctypes.byref(a), ctypes.byref(b))
    return a.value, b.value


def _build_smallm() -> Path:
    """Compile ``_smallm.c`` once per source version into the user's cache (atomic rename)."""
    src = _SMALLM_SRC.read_bytes()
    cpu = Path("/proc/cpuinfo").read_bytes() if Path("/proc/cpuinfo").exists() else b""
    flags = [ln for ln in cpu.splitlines() if ln.startswith((b"flags", b"model name"))][:2]
    key = src + " ".join(_CFLAGS).encode() + os.uname().machine.encode() + b"".join(flags)
    tag = hashlib.sha1(key).hexdigest()[:12]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cherry-mlx"
    out = base / f"smallm-{tag}.so"
    if out.exists():
        return out
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise OSError("no C compiler (apt-get install gcc)")
    base.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=base)
    os.close(fd)
    try:
        subprocess.run([cc, *_CFLAGS, "-o", tmp, str(_SMALLM_SRC), "-lpthread"],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _load_smallm() -> ctypes.CDLL | None:
    global smallm_status
    if os.environ.get(SMALL_ENV, "1").lower() in ("0", "off", "false", "no"):
        smallm_status = "disabled"
        return None
    try:
        return ctypes.CDLL(str(_build_smallm()), mode=ctypes.RTLD_GLOBAL)
    except (OSError, subprocess.SubprocessError) as err:
        smallm_status = f"unavailable ({str(err).splitlines()[0] if str(err) else err!r})"
        _say(f"decode-shaped matmuls stay on OpenBLAS's sgemm: {smallm_status}")
        return None


_addr: list = []


def _connect_smallm(shim: ctypes.CDLL, blas: ctypes.CDLL) -> None:
    """Hand OpenBLAS's sgemm and sgemv to the shim (it forwards every call to one of them)."""
    global smallm, smallm_status
    _addr[:] = [
        ctypes.cast(getattr(blas, n), ctypes.c_void_p) for n in ("cblas_sgemm", "cblas_sgemv")
    ]
    shim.cherry_smallm_set(*_addr)
    smallm, smallm_status = shim, "on"


def use_small_gemm(on: bool) -> bool:
    """Switch the decode-shaped path on or off in this process (benchmarks compare both in one
    run); False when it is not loaded (nothing to switch). Off, every product goes to OpenBLAS's
    sgemm."""
    if smallm is None:
        return False
    smallm.cherry_smallm_set(_addr[0], _addr[1] if on else None)
    return True
