"""Use a fast BLAS under MLX on Linux without the user doing anything.

The Linux ``mlx-cpu`` wheel links a bundled *reference* BLAS (fp32 matmul ~4-5 GFLOP/s on a
2-core machine); Debian's OpenBLAS runs the same matmul at 130-300 GFLOP/s. Loading OpenBLAS with
``RTLD_GLOBAL`` *before* ``mlx.core`` is imported puts its ``cblas_*``/``sgemm_`` symbols first in
the global lookup scope, so when ``libmlx.so`` is loaded its BLAS calls bind to OpenBLAS: the same
effect as ``LD_PRELOAD`` with no re-exec. This must therefore run before anything imports mlx,
which is why ``cherry_mlx/__init__.py`` calls it first.

Set ``CHERRY_MLX_FAST_BLAS=0`` to turn it off, or to a path to use that library instead.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import sysconfig

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

# What happened, for `cherry-mlx info` and tests: "preloaded", "not-needed", "disabled",
# "missing", "too-late" or "failed".
status: str = "unknown"
library: str | None = None


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
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                status, library = "preloaded", path
                if not os.environ.get("_CHERRY_MLX_BLAS_SAID"):
                    os.environ["_CHERRY_MLX_BLAS_SAID"] = "1"  # once per process tree
                    _say(f"using {path} for MLX's CPU matmul (set {ENV}=0 to turn off)")
            except OSError as err:
                status = "failed"
                _say(f"could not load {path} ({err}); MLX keeps its reference BLAS")
    return status
