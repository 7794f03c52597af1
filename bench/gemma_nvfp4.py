# ruff: noqa: I001  (cherry_mlx must be imported before mlx)
"""NVFP4 on a real Gemma 3 (gemma-3-270m Q4_K_M import): greedy agreement with full precision and
held-out prose loss, with the tensor-scale fold as this tree does it.

    python bench/gemma_nvfp4.py runs/imported/gemma3-270m [--tokens 32] [--out results.json]

Budget: 4 fixed prompts x ``--tokens`` greedy tokens, 8 windows x 256 tokens of the bundled
held-out English prose; deterministic (no sampling), so one run is the measurement.
"""

import argparse
import json
import time

import cherry_mlx  # noqa: F401  (fast BLAS before mlx)
import mlx.core as mx
import mlx.nn as nn
from cherry_mlx.decoding.generate import generate_tokens
from cherry_mlx.evaluation.quantization import prose_windows
from cherry_mlx.models import load_model, load_tokenizer
from cherry_mlx.quant.quantize import quantize_model

PROMPTS = [
    "The capital of France is",
    "Water boils at a temperature of",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
]


def prose_loss(model, windows) -> float:
    """Mean next-token cross-entropy over the windows (nats)."""
    tot = 0.0
    for i in range(windows.shape[0]):
        w = windows[i : i + 1]
        tot += nn.losses.cross_entropy(model(w[:, :-1]).astype(mx.float32), w[:, 1:]).sum().item()
    return tot / (windows.shape[0] * (windows.shape[1] - 1))


def measure(model, tok, windows, n):
    outs = [list(generate_tokens(model, tok.encode(p), max_tokens=n)) for p in PROMPTS]
    return outs, prose_loss(model, windows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--keep", default="", help="--keep of quantize (comma-separated)")
    ap.add_argument("--out")
    a = ap.parse_args()
    tok = load_tokenizer(a.model)
    windows = prose_windows(a.model)
    model, cfg = load_model(a.model)
    ref, ref_loss = measure(model, tok, windows, a.tokens)
    t = time.time()
    model, _ = quantize_model(model, cfg, "nvfp4", keep=[k for k in a.keep.split(",") if k])
    q, q_loss = measure(model, tok, windows, a.tokens)
    first = [
        next((i for i, (x, y) in enumerate(zip(r, o)) if x != y), len(r)) for r, o in zip(ref, q)
    ]
    res = {
        "prose_loss_fp32": round(ref_loss, 4),
        "prose_loss_nvfp4": round(q_loss, 4),
        "greedy_tokens_equal_before_first_difference": first,
        "tokens_per_prompt": a.tokens,
        "nvfp4_text": [tok.decode(o) for o in q],
        "fp32_text": [tok.decode(r) for r in ref],
        "wall_s": round(time.time() - t, 1),
    }
    print(json.dumps(res, indent=1, ensure_ascii=False))
    if a.out:
        open(a.out, "w").write(json.dumps(res, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
