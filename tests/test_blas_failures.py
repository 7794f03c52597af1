"""Every way loading the fast BLAS and the decode-shaped shim can fail ends in a notice and
correct matmuls on MLX's own BLAS, never in a crash; commands that multiply no matrices load and
compile nothing. Each case runs in a fresh process (the loading happens once per process)."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cherry_mlx import _blas

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or not _blas._reference_blas_bundled() or _blas.find_openblas() is None,
    reason="only Linux mlx-cpu wheels with OpenBLAS installed load anything",
)

# A decode-shaped product (3 rows, W transposed), a general one, and one with B as stored,
# checked against numpy; then what the process has mapped.
PROBE = """
import json, sys
{pre}
import numpy as np, cherry_mlx, mlx.core as mx
from cherry_mlx import _blas
rng = np.random.default_rng(0)
x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((3, 64), (300, 64), (64, 40)))
got = [mx.array(x) @ mx.array(w).T, mx.array(w) @ mx.array(b), mx.array(x) @ mx.array(w.T.copy())]
ref = [x @ w.T, w @ b, x @ w.T]
ok = all(np.allclose(np.array(g), r, rtol=1e-4, atol=1e-4) for g, r in zip(got, ref))
maps = open("/proc/self/maps").read()
print(json.dumps({{"status": _blas.status, "smallm": _blas.smallm_status, "ok": ok,
                  "shim_mapped": "/smallm-" in maps, "openblas_mapped": {openblas!r} in maps,
                  "counts": _blas.smallm_counts()}}))
"""


def probe(tmp_path, pre="", **env):
    """Run PROBE in a fresh process with ``env`` (cache under tmp_path); (result, stderr)."""
    full = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "CHERRY_MLX_QUIET": ""}
    for name in ("LD_PRELOAD", "_CHERRY_MLX_BLAS_SAID", "CC", "CHERRY_MLX_SMALL_GEMM"):
        full.pop(name, None)
    full.update(env)
    code = PROBE.format(pre=pre, openblas=os.path.realpath(_blas.find_openblas()))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full)
    assert out.returncode == 0, f"rc {out.returncode}: {out.stderr[-2000:]}"
    return json.loads(out.stdout.splitlines()[-1]), out.stderr


def notices(stderr):
    return [ln for ln in stderr.splitlines() if ln.startswith("[cherry-mlx]")]


def cache_files(tmp_path):
    return sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())


def fake_cc(tmp_path, body):
    """A directory holding only ``cc``, a shell script with ``body``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    cc = bin_dir / "cc"
    cc.write_text("#!/bin/sh\n" + body + "\n")
    cc.chmod(0o755)
    return bin_dir


def test_the_working_setup_takes_the_shim(tmp_path):
    res, err = probe(tmp_path)
    assert res["ok"] and res["status"] == "preloaded" and res["smallm"] == "on"
    assert res["shim_mapped"] and res["openblas_mapped"]
    assert res["counts"] == [2, 1]  # the two 3-row products, the 300-row one left to sgemm
    assert len(notices(err)) == 1 and len(cache_files(tmp_path)) == 1


@pytest.mark.parametrize(
    "kind", ["text file", "missing file", "folder", "not a BLAS", "unknown library name"]
)
def test_a_bad_library_setting_keeps_the_reference_blas(tmp_path, kind):
    text = tmp_path / "fakeblas.so"
    text.write_text("not a library\n")
    value = {
        "text file": str(text),
        "missing file": "/nonexistent/libblas.so",
        "folder": str(tmp_path),
        "not a BLAS": next(p for p in ("/lib/x86_64-linux-gnu/libm.so.6", "libm.so.6")),
        "unknown library name": "libmyblas.so",  # a bare name is looked up, not ignored
    }[kind]
    res, err = probe(tmp_path, CHERRY_MLX_FAST_BLAS=value)
    assert res["ok"] and res["status"] == "failed" and res["smallm"] == "off"
    assert not res["shim_mapped"] and not res["openblas_mapped"]
    (line,) = notices(err)
    assert f"CHERRY_MLX_FAST_BLAS={value}" in line and "reference BLAS" in line
    assert cache_files(tmp_path) == []  # the shim is not even built


def test_a_bare_library_name_is_used(tmp_path):
    res, _ = probe(tmp_path, CHERRY_MLX_FAST_BLAS=Path(_blas.find_openblas()).name)
    assert res["ok"] and res["status"] == "preloaded" and res["smallm"] == "on"


def test_openblas_missing_gives_the_apt_hint_and_no_shim(tmp_path):
    pre = "from cherry_mlx import _blas; _blas.find_openblas = lambda: None"
    res, err = probe(tmp_path, pre=pre)
    assert res["ok"] and res["status"] == "missing" and not res["shim_mapped"]
    assert "apt-get install libopenblas0-pthread" in err and cache_files(tmp_path) == []


@pytest.mark.parametrize(
    "case, cc_body, says",
    [
        ("no compiler", None, "no C compiler"),
        ("compiler that fails", "exit 1", "--version failed"),
        ("compile error", '[ "$1" = --version ] && exit 0; echo "error: boom" >&2; exit 1', "boom"),
        ("empty output", '[ "$1" = --version ] && exit 0; exit 0', "produced nothing"),
        # writes text where the library should be: loading it fails, the bad build is removed
        ("garbage output", 'for a; do [ "$p" = -o ] && echo junk > "$a"; p=$a; done', "too short"),
    ],
)
def test_no_working_compiler_leaves_decode_products_on_openblas(tmp_path, case, cc_body, says):
    bin_dir = fake_cc(tmp_path, cc_body) if cc_body else tmp_path  # no cc on PATH at all
    res, err = probe(tmp_path, PATH=str(bin_dir))
    assert res["ok"] and res["status"] == "preloaded" and res["openblas_mapped"]
    assert res["smallm"].startswith("unavailable") and says in res["smallm"]
    assert not res["shim_mapped"] and res["counts"] == [0, 0]
    assert any("decode-shaped matmuls stay on OpenBLAS" in ln for ln in notices(err))
    assert cache_files(tmp_path) == []


@pytest.mark.parametrize("where", ["a file", "/proc"])
def test_an_unwritable_cache_leaves_decode_products_on_openblas(tmp_path, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    cache = str(blocker) if where == "a file" else "/proc/1"  # not writable, even by root
    res, _ = probe(tmp_path, XDG_CACHE_HOME=cache)
    assert res["ok"] and res["status"] == "preloaded"
    assert res["smallm"].startswith("unavailable") and not res["shim_mapped"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_cache_folder_leaves_decode_products_on_openblas(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o500)
    res, _ = probe(tmp_path)
    assert res["ok"] and res["smallm"].startswith("unavailable")


def test_build_is_cached_per_compiler_version(tmp_path):
    gcc = shutil.which("cc") or shutil.which("gcc")
    if gcc is None:
        pytest.skip("no C compiler here")
    log = tmp_path / "cc.log"
    version = tmp_path / "version"
    version.write_text("1")
    # a compiler wrapper that logs its calls; its --version output names a release we control
    bin_dir = fake_cc(
        tmp_path,
        f'echo "$1" >> {log}; [ "$1" = --version ] && {{ cat {version}; exit 0; }}; '
        f'exec {gcc} "$@"',
    )
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"  # the wrapper first; gcc needs `as`
    for _ in range(2):
        assert probe(tmp_path, PATH=path)[0]["smallm"] == "on"
    assert log.read_text().split().count("--version") == 2
    assert len(log.read_text().split()) == 3  # compiled once: the second run reused the build
    version.write_text("2")  # a compiler upgrade builds again
    assert probe(tmp_path, PATH=path)[0]["smallm"] == "on"
    assert len(cache_files(tmp_path)) == 2


def test_cache_key_covers_compiler_flags_source_and_cpu(monkeypatch):
    x86 = b"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse avx2\ncpu MHz\t: 1000\n"
    arm = b"processor\t: 0\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n"
    key = _blas.smallm_key(["/usr/bin/gcc"], b"gcc 12", x86)
    assert key == _blas.smallm_key(["/usr/bin/gcc"], b"gcc 12", x86)
    assert key != _blas.smallm_key(["/usr/bin/clang"], b"gcc 12", x86)
    assert key != _blas.smallm_key(["/usr/bin/gcc"], b"gcc 13", x86)
    assert key != _blas.smallm_key(["/usr/bin/gcc"], b"gcc 12", x86.replace(b"avx2", b"avx512f"))
    # a clock-speed reading is not a feature: same build
    assert key == _blas.smallm_key(["/usr/bin/gcc"], b"gcc 12", x86.replace(b"1000", b"2000"))
    arm_key = _blas.smallm_key(["/usr/bin/gcc"], b"gcc 12", arm)
    assert arm_key != _blas.smallm_key(["/usr/bin/gcc"], b"gcc 12", arm + b"Features\t: x\n")
    assert arm_key != _blas.smallm_key(["/usr/bin/gcc"], b"gcc 12", arm.replace(b"asimd", b"sve"))
    assert arm_key != _blas.smallm_key(["/usr/bin/gcc"], b"gcc 12", arm.replace(b"d0c", b"d40"))
    monkeypatch.setattr(_blas, "_CFLAGS", [*_blas._CFLAGS, "-g"])
    assert key != _blas.smallm_key(["/usr/bin/gcc"], b"gcc 12", x86)


# Runs the CLI as `cherry-mlx ARGS` would, then reports what the process loaded.
CLI = """
import json, runpy, sys
sys.argv = ["cherry-mlx", *sys.argv[1:]]
try:
    runpy.run_module("cherry_mlx_cli.main", run_name="__main__")
except SystemExit as e:
    assert e.code in (None, 0), e.code
from cherry_mlx import _blas
maps = open("/proc/self/maps").read()
print(json.dumps([_blas.status, {openblas!r} in maps, "/smallm-" in maps]))
"""


@pytest.mark.parametrize(
    "args",
    [["--help"], ["train", "--help"], ["info"], ["plan", "cherry-tiny", "--to", "1L"]],
    ids=["--help", "train --help", "info", "plan"],
)
def test_commands_without_matmul_load_and_compile_nothing(tmp_path, args):
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": "", "CHERRY_MLX_QUIET": ""}
    env.pop("_CHERRY_MLX_BLAS_SAID", None)
    code = CLI.format(openblas=os.path.realpath(_blas.find_openblas()))
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    status, openblas, shim = json.loads(out.stdout.splitlines()[-1])
    assert status in ("unknown", "skipped") and not openblas and not shim
    assert "[cherry-mlx]" not in out.stderr and list(tmp_path.rglob("*")) == []


CRASHER = """
import os, signal, sys
from cherry_mlx.models.runs import RunLock
RunLock(sys.argv[1]).acquire()
print(os.getpid(), flush=True)
os.kill(os.getpid(), signal.SIGSEGV)  # a crash: no cleanup runs
"""


def test_a_lock_left_by_a_crashed_run_is_taken_over(tmp_path):
    from cherry_mlx.models.runs import PID_FILE, RunLock, live_trainer

    crashed = subprocess.run([sys.executable, "-c", CRASHER, str(tmp_path)], capture_output=True)
    assert crashed.returncode == -signal.SIGSEGV and (tmp_path / PID_FILE).exists()
    assert live_trainer(tmp_path) is None
    notes = []
    RunLock(tmp_path).acquire(notes.append).release()
    pid = int(crashed.stdout)
    assert f"process {pid}, which is no longer running" in notes[0]
    assert not (tmp_path / PID_FILE).exists()
