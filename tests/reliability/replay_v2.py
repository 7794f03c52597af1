"""Replay every case of the second hostile-input round (``reliability-v2.md``), as typed, in a
scratch folder; print each verdict and the passed/failed counts.

    python tests/reliability/replay_v2.py SCRATCH [ID ...]   # fixtures built there when missing

Each case is (id, shell command, predicate over (rc, output, scratch)); the fixtures are
``fixtures_v2.py``'s. A predicate checks the right result, or a one-line error (exit 2, no
traceback) with the words that name the fault, and that nothing of the user's changed."""

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases_v2 import CASES  # noqa: E402
from fixtures_v2 import make_all, reset_cases  # noqa: E402


def main(scratch: str, only=()) -> int:
    d = Path(scratch).resolve()
    make_all(d)
    reset_cases(d)
    weights = Path(__file__).resolve().parents[2] / "weights"
    cases = [c for c in CASES if not only or c[0] in only]
    passed, failed = 0, []
    for cid, cmd, ok in cases:
        res = subprocess.run(
            ["bash", "-c", f"export WEIGHTS={weights}; {cmd}"],
            cwd=d,
            capture_output=True,
            text=True,
        )
        out = res.stdout + res.stderr
        good = ok(res.returncode, out, d)
        passed += good
        failed += [] if good else [cid]
        print(
            f"{cid:8} {'pass' if good else 'FAIL'}  rc={res.returncode}  "
            f"{(out.strip().splitlines() or [''])[-1][:110]}",
            flush=True,
        )
    print(f"replayed {len(cases)}, passed {passed}, failed {len(failed)} {' '.join(failed)}")
    return 0 if passed == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ".", set(sys.argv[2:])))
