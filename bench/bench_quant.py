"""Quantisation side by side: perplexity on real English prose, bits per weight, weight memory,
prefill and decode speed for fp32 and every mode, with and without calibration.

    python bench/bench_quant.py MODEL [--tokens 1024] [--calib-samples 16] [--only nvfp4,...]

Perplexity is over the first ``--tokens`` tokens of the bundled English prose held-out split
(weights/data/prose/en.valid.jsonl, never used for calibration); calibration uses the bundled
chat training split. Each variant starts again from the full-precision weights.
"""

# ruff: noqa: I001  (cherry_mlx must be imported before mlx)
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import cherry_mlx  # noqa: F401  (fast BLAS before mlx)
import mlx.core as mx
import mlx.nn as nn

from cherry_mlx.data.jsonl import read_jsonl
from cherry_mlx.evaluation.quantization import calibration_batches, speed
from cherry_mlx.models.loading import load_model, load_tokenizer
from cherry_mlx.quant.quantize import quantize_model, weight_memory

PROSE = Path(__file__).resolve().parents[1] / "weights/data/prose/en.valid.jsonl"

# name -> (mode, keep, calibrate, fold)
VARIANTS = {
    "nvfp4 (no fold)": ("nvfp4", [], None, False),
    "nvfp4": ("nvfp4", [], None, True),
    "nvfp4 keep embed": ("nvfp4", ["embed"], None, True),
    "nvfp4 keep auto": ("nvfp4", ["auto"], None, True),
    "nvfp4 gptq": ("nvfp4", [], "gptq", True),
    "nvfp4 awq": ("nvfp4", [], "awq", True),
    "nvfp4 awq+gptq": ("nvfp4", [], "awq+gptq", True),
    "nvfp4 gptq keep auto": ("nvfp4", ["auto"], "gptq", True),
    "mxfp4": ("mxfp4", [], None, True),
    "mxfp4 gptq": ("mxfp4", [], "gptq", True),
    "affine4": ("affine4", [], None, True),
    "affine4 gptq": ("affine4", [], "gptq", True),
    "affine8": ("affine8", [], None, True),
}


def prose_tokens(tokenizer, n: int) -> mx.array:
    ids = []
    for ex in read_jsonl(PROSE):
        ids += tokenizer.encode(ex["text"])
        if len(ids) > n:
            break
    return mx.array(ids[: n + 1])


def perplexity(model, toks: mx.array) -> float:
    logits = model(toks[None, :-1]).astype(mx.float32)
    ce = nn.losses.cross_entropy(logits[0], toks[1:]).mean()
    return math.exp(ce.item())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--calib-samples", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=128, help="Prefill length for the speed.")
    ap.add_argument("--decode", type=int, default=16, help="Decoded tokens for the speed.")
    ap.add_argument("--only", default=None, help="Comma-separated variant names.")
    ap.add_argument("--json", default=None, help="Write the rows here too.")
    args = ap.parse_args()
    toks = prose_tokens(load_tokenizer(args.model), args.tokens)
    calib = calibration_batches(args.model, None, args.calib_samples)
    model, cfg = load_model(args.model)
    fp = {
        "ppl": perplexity(model, toks),
        **weight_memory(model),
        **speed(model, args.prompt, args.decode),
    }
    rows = {"fp32": fp}
    print(f"{'variant':<22} {'ppl':>8} {'vs fp32':>8} {'bits/w':>7} {'MiB':>7} "
          f"{'prefill':>8} {'decode':>7} {'secs':>6}")  # fmt: skip

    def show(name, r):
        print(f"{name:<22} {r['ppl']:8.2f} {r['ppl'] / fp['ppl'] - 1:+8.1%} "
              f"{r['bits_per_weight']:7.2f} {r['bytes'] / 2**20:7.1f} {r['prefill']:8.0f} "
              f"{r['decode']:7.1f} {r.get('secs', 0):6.0f}", flush=True)  # fmt: skip

    show("fp32", fp)
    names = args.only.split(",") if args.only else list(VARIANTS)
    for name in names:
        mode, keep, calibrate, fold = VARIANTS[name]
        model, cfg = load_model(args.model)
        t0 = time.perf_counter()
        model, qcfg = quantize_model(model, cfg, mode, keep, fold=fold, calibrate=calibrate,
                                     calib=calib)  # fmt: skip
        secs = time.perf_counter() - t0
        r = {
            "ppl": perplexity(model, toks),
            **weight_memory(model),
            **speed(model, args.prompt, args.decode),
            "secs": secs,
        }
        r["keep_auto"] = qcfg["cherry_quant"].get("keep_auto")
        rows[name] = r
        show(name, r)
        if r["keep_auto"]:
            print(f"    keep auto: {', '.join(r['keep_auto'])}")
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
