"""GGUF import cost and the imported model's decode speed, ours vs mlx-lm on the same folder.

    python bench/bench_import.py [--source gemma3-270m] [--gen 64] [--reps 3]

(a) ``import_gguf`` wall time and peak resident memory, measured in a fresh subprocess so that
    nothing else this script loads is counted, beside the float32 weights' size (target: peak
    <= 1.5x);
(q) dequantisation of the file's own tensors, per storage type: our MLX decoders vs llama.cpp's
    numpy ones (``gguf.quants.dequantize``), interleaved, median of ``--reps``, and whether they
    agree bit for bit;
(b) decode tok/s of the imported folder: our ``generate_tokens`` (``load_model``) vs mlx-lm's
    ``generate_step`` (``mlx_lm.load``), same chat prompt, same token count, interleaved, median of
    ``--reps`` (figures drift between runs on a shared machine: compare the ratio).
"""

# ruff: noqa: I001  (cherry_mlx must be imported before mlx)
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cherry_mlx  # noqa: F401  (fast BLAS: must come before mlx)
import mlx.core as mx

from cherry_mlx.decoding.generate import GenerationStats, generate_tokens
from cherry_mlx.models import load_model, load_tokenizer

_CHILD = """
import json, resource, sys, time
import cherry_mlx
from cherry_mlx.models.gguf import import_gguf
t = time.perf_counter()
import_gguf(sys.argv[1], sys.argv[2], dtype=sys.argv[3])
secs = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": secs, "peak_mb": peak}))
"""


def import_cost(source: str, out: Path, dtype: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, source, str(out), dtype],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def decode_speed(source: str, reps: int) -> None:
    """(q): every tensor type of the file, all its tensors of that type, both decoders."""
    import gguf
    import numpy as np

    from cherry_mlx.models.gguf import gguf_source
    from cherry_mlx.models.gguf_file import read_tensor_table
    from cherry_mlx.models.gguf_quants import dequantize

    path = gguf_source(source)
    by_type = {}
    for info in read_tensor_table(path).values():
        by_type.setdefault(info.type_name, []).append(info)
    data = np.fromfile(path, dtype=np.uint8)
    for name, infos in sorted(by_type.items()):
        if name in ("F32", "F16", "BF16"):
            continue
        raws = [data[i.offset : i.offset + i.nbytes] for i in infos]
        qtype = gguf.GGMLQuantizationType[name]
        t_np, t_mx, exact = [], [], True
        for _ in range(reps):
            t = time.perf_counter()
            ref = [gguf.quants.dequantize(r, qtype).reshape(-1) for r in raws]
            t_np.append(time.perf_counter() - t)
            t = time.perf_counter()
            ours = [dequantize(mx.array(r), name) for r in raws]
            mx.eval(ours)
            t_mx.append(time.perf_counter() - t)
        exact = all(np.array_equal(np.array(o).view(np.uint32), r.view(np.uint32))
                    for o, r in zip(ours, ref))  # fmt: skip
        n = sum(int(np.prod(i.shape)) for i in infos) / 1e6
        a, b = statistics.median(t_np), statistics.median(t_mx)
        print(
            f"(q) {name:7s} {len(infos):3d} tensors {n:6.1f} M values: numpy {a:.3f} s, "
            f"MLX {b:.3f} s ({a / b:.1f}x), bit-exact {exact}"
        )


def ours_tps(model, prompt, n) -> float:
    st = GenerationStats()
    for _ in generate_tokens(model, prompt, max_tokens=n, stats=st):
        pass
    return st.decode_tps


def mlx_lm_tps(model, prompt, n) -> float:
    from mlx_lm.generate import generate_step

    it = generate_step(mx.array(prompt), model, max_tokens=n)
    next(it)  # the first token comes out of the prefill
    t, k = time.perf_counter(), 0
    for _ in it:
        k += 1
    return k / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", default="gemma3-270m", help=".gguf file or short name")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-decode", action="store_true", help="only (a) and (q): skip (b)")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "imported"
        cost = import_cost(a.source, out, a.dtype)
        size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
        cfg = json.loads((out / "config.json").read_text())
        # the weights' size in float32 (a 16-bit import is half of it)
        fp32 = (out / "model.safetensors").stat().st_size / 2**20
        fp32 *= 1 if a.dtype == "float32" else 2
        print(
            f"(a) import {a.source}: {cost['seconds']:.1f} s, peak RSS {cost['peak_mb']:.0f} MB "
            f"= {cost['peak_mb'] / fp32:.2f}x the float32 weights ({fp32:.0f} MB; target <= 1.5x), "
            f"folder {size:.0f} MB ({cfg['num_hidden_layers']} layers, {a.dtype})"
        )
        decode_speed(a.source, a.reps)
        if a.no_decode:
            return

        from mlx_lm import load as mlx_lm_load

        ours_model, _ = load_model(out)
        theirs, _ = mlx_lm_load(str(out))
        mx.eval(ours_model.parameters(), theirs.parameters())
        tok = load_tokenizer(out)
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        prompt = tok.apply_chat_template(messages, add_generation_prompt=True)
        ours_tps(ours_model, prompt, 4), mlx_lm_tps(theirs, prompt, 4)  # warm up
        r_ours, r_theirs = [], []
        for _ in range(a.reps):
            r_ours.append(ours_tps(ours_model, prompt, a.gen))
            r_theirs.append(mlx_lm_tps(theirs, prompt, a.gen))
        t_ours, t_theirs = statistics.median(r_ours), statistics.median(r_theirs)
        print(
            f"(b) decode ({len(prompt)}-token prompt, {a.gen} tokens): ours {t_ours:.1f} tok/s "
            f"vs mlx-lm {t_theirs:.1f} tok/s: {t_ours / t_theirs:.2f}x"
        )


if __name__ == "__main__":
    main()
