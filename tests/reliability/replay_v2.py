"""Replay the owned cases of the second hostile-input round that this branch fixed, as typed, in
a scratch folder; print each verdict and the passed/failed counts.

    python tests/reliability/replay_v2.py SCRATCH   # SCRATCH holds fx/smol.gguf, fxruns/tiny

Each case is (id, shell command, predicate over (rc, output, scratch))."""

import subprocess
import sys
from pathlib import Path


def _no_tb(rc, out, _):
    return "Traceback" not in out


def _err(text):
    return lambda rc, out, _: rc == 2 and text in out and "Traceback" not in out


CASES = [
    (
        "I24",
        "mkdir -p src1 && cp fx/smol.gguf src1/m.gguf && echo n > src1/notes.txt && "
        "cherry-mlx import src1/m.gguf -o src1 --force; ls src1",
        lambda rc, out, d: "m.gguf" in out and "notes.txt" in out and "contains the source" in out,
    ),
    (
        "I25",
        "mkdir -p proj/sub && echo t > proj/thesis.txt && echo d > proj/sub/data.csv && "
        "cherry-mlx import fx/smol.gguf -o proj --force",
        lambda rc, out, d: (
            rc == 0 and (d / "proj/thesis.txt").is_file() and (d / "proj/sub/data.csv").is_file()
        ),
    ),
    (
        "I26",
        "rm -rf fxruns/tinycopy; cp -r fxruns/tiny fxruns/tinycopy && "
        "cherry-mlx import fx/smol.gguf -o fxruns/tinycopy --force",
        lambda rc, out, d: rc == 2 and (d / "fxruns/tinycopy/checkpoints").is_dir(),
    ),
    (
        "I27",
        "mkdir -p dotbox && cd dotbox && cherry-mlx import ../fx/smol.gguf -o . --force",
        lambda rc, out, d: rc == 0 and (d / "dotbox/config.json").is_file(),
    ),
    (
        "I28",
        "mkdir -p cwdbox && echo k > cwdbox/keep.txt && cd cwdbox && "
        'cherry-mlx import ../fx/smol.gguf -o "$PWD" --force',
        lambda rc, out, d: rc == 0 and (d / "cwdbox/keep.txt").is_file(),
    ),
    (
        "I31",
        "mkdir -p out/.i30.tmp-abc123 && cherry-mlx import fx/smol.gguf -o out/i30 --force; "
        "ls -a out",
        lambda rc, out, d: "reclaimed" in out and ".i30.tmp" not in out.split("reclaimed")[-1],
    ),
    (
        "N06",
        "cherry-mlx info fx/smol.gguf | tail -4",
        lambda rc, out, d: rc == 0 and "effective depth 30" in out,
    ),
    (
        "N13",
        "mkdir -p mgg/model-hf && cp fx/smol.gguf mgg/model.gguf && "
        'echo \'{"file": "/x.gguf"}\' > mgg/model-hf/gguf_source.json && '
        "echo n > mgg/model-hf/notes.txt && cherry-mlx info mgg/model.gguf | tail -2",
        lambda rc, out, d: (
            rc == 0
            and (d / "mgg/model-hf/notes.txt").is_file()
            and not (d / "mgg/model-hf/model.safetensors").exists()
        ),
    ),
    (
        "W6",
        "mkdir -p wdir && CHERRY_MLX_WEIGHTS=./wdir cherry-mlx data build --scale 0.01 "
        "--no-prose --force 2>&1 | tail -1",
        lambda rc, out, d: (d / "wdir/data/default/train.jsonl").is_file(),
    ),
    ("W1", "CHERRY_MLX_WEIGHTS=/nowhere cherry-mlx info", _err("CHERRY_MLX_WEIGHTS=/nowhere")),
    (
        "W5",
        "CHERRY_MLX_WEIGHTS= cherry-mlx info cherry-tiny | tail -1",
        lambda rc, out, d: rc == 0 and "weight memory" in out,
    ),
    ("B04", "cherry-mlx data build -o db/b04 --scale nan --no-prose", _err("--scale nan")),
    (
        "B06",
        "mkdir -p cfg && echo garbage > cfg/garbage.json && cherry-mlx data build -o db/b06 "
        "--scale 0.01 --no-prose --tokenizer cfg/garbage.json",
        lambda rc, out, d: rc == 2 and not (d / "db/b06").exists(),
    ),
    (
        "TK13b",
        "mkdir -p data/good && head -300 $WEIGHTS/data/default/train.jsonl > "
        "data/good/train.jsonl && cherry-mlx tokenizer train -d data/good/train.jsonl --vocab-size "
        "1200 --no-required-hangul --model-max-length -5 -o tok/k13",
        _err("--model-max-length -5"),
    ),
    (
        "G04",
        "timeout 60 cherry-mlx generate fxruns/tiny/best -m 5 "
        '-p "$(python3 -c \'print("abc "*25000)\')"',
        lambda rc, out, d: rc == 0 and "only its last" in out,
    ),
    (
        "H10",
        "printf 'hi\\n' | timeout 60 cherry-mlx chat fxruns/tiny/best -m 3 --system "
        '"$(python3 -c \'print("x "*10000)\')"',
        _err("--system is"),
    ),
    ("G15", "cherry-mlx generate fxruns/tiny/best -p - -m 5 <&-", _err("stdin is closed")),
    (
        "G15b",
        "cherry-mlx generate fxruns/tiny/best -p hi -m 5 <&-",
        lambda rc, out, d: rc == 0 and "Traceback" not in out,
    ),
    (
        "H02",
        "cherry-mlx chat fxruns/tiny/best -m 5 <&-",
        lambda rc, out, d: rc == 0 and "Traceback" not in out,
    ),
]


def main(scratch: str) -> int:
    d = Path(scratch).resolve()
    weights = Path(__file__).resolve().parents[2] / "weights"
    passed = 0
    for cid, cmd, ok in CASES:
        res = subprocess.run(
            ["bash", "-c", f"export WEIGHTS={weights}; {cmd}"],
            cwd=d,
            capture_output=True,
            text=True,
        )
        out = res.stdout + res.stderr
        good = ok(res.returncode, out, d)
        passed += good
        print(
            f"{cid:6} {'pass' if good else 'FAIL'}  rc={res.returncode}  "
            f"{(out.strip().splitlines() or [''])[-1][:100]}"
        )
    print(f"replayed {len(CASES)}, passed {passed}, failed {len(CASES) - passed}")
    return 0 if passed == len(CASES) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
