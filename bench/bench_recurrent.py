"""Forward+backward of a weight-tied 6Lx8 (34 effective layers) vs a true 34-layer model.

Both have the same width and the same effective depth, so they do the same FLOPs; the looped one
holds 6 layers of weights. Each is measured with and without per-block ``mx.checkpoint``, side by
side in one process (figures vary ~25% between processes on this machine).

Peak memory is split into a floor (weights + their gradients, which no checkpointing can remove)
and the rest (activations and temporaries), which is what checkpointing acts on. The untied model's
floor is large (34 layers of weights and gradients), the tied model's small, so checkpointing
removes a bigger share of the untied model's peak; compare the activation column to see that
checkpointing shrinks activations similarly for both.

    python bench/bench_recurrent.py                 # h256, batch 4 x 128
    python bench/bench_recurrent.py --hidden 512 --batch 8 --seq 256 --reps 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

import cherry_mlx  # noqa: F401  (fast BLAS before mlx)
from cherry_mlx.compression.recurrent import unroll, weight_bytes
from cherry_mlx.models import build_model

MiB = 1024 * 1024


def config(hidden: int, layers: int, vocab: int) -> dict:
    return dict(
        model_type="llama",
        hidden_size=hidden,
        num_hidden_layers=layers,
        intermediate_size=int(hidden * 2.75) // 32 * 32,
        num_attention_heads=max(hidden // 64, 1),
        num_key_value_heads=max(hidden // 128, 1),
        rms_norm_eps=1e-5,
        vocab_size=vocab,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )


def loss_fn(model, x, y):
    return nn.losses.cross_entropy(model(x), y, reduction="mean")


def measure(model, x, y, reps: int):
    """Median seconds per forward+backward, peak bytes, and the weights+grads floor in bytes."""
    step = nn.value_and_grad(model, loss_fn)
    loss, grads = step(model, x, y)  # warm-up (allocations, graph caches)
    mx.eval(loss, grads)
    grad_bytes = sum(g.nbytes for _, g in tree_flatten(grads))
    del loss, grads
    times = []
    mx.reset_peak_memory()
    for _ in range(reps):
        t0 = time.perf_counter()
        loss, grads = step(model, x, y)
        mx.eval(loss, grads)
        times.append(time.perf_counter() - t0)
        del loss, grads
    return statistics.median(times), mx.get_peak_memory(), weight_bytes(model) + grad_bytes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--unique", type=int, default=6)
    ap.add_argument("--loops", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--scaling", action="store_true", help="also: extra peak per added loop, P1 C1 Q1 x n"
    )
    args = ap.parse_args()

    mx.random.seed(0)
    base_cfg = config(args.hidden, args.unique, args.vocab)
    tied, tied_cfg = unroll(build_model(base_cfg), base_cfg, loops=args.loops)
    depth = tied.args.effective_depth
    untied = build_model(config(args.hidden, depth, args.vocab))
    mx.eval(tied.parameters(), untied.parameters())
    x = mx.random.randint(0, args.vocab, (args.batch, args.seq))
    y = mx.random.randint(0, args.vocab, (args.batch, args.seq))
    print(
        f"h{args.hidden}, batch {args.batch} x {args.seq}, {args.reps} reps; tied "
        f"{args.unique}Lx{args.loops} (P1 C{args.unique - 2} Q1) = {depth} effective layers vs a "
        f"true {depth}-layer model"
    )
    rows = {}
    for name, model in (("tied", tied), ("untied", untied)):
        for ckpt in (False, True):
            model.model.checkpoint = ckpt
            rows[(name, ckpt)] = measure(model, x, y, args.reps)
            model.model.checkpoint = False

    hdr = f"{'model':<28} {'weights MiB':>11} {'s/step':>7} {'peak MiB':>9} {'floor':>7}"
    hdr += f" {'act+tmp':>8}"
    print(hdr)
    for (name, ckpt), (sec, peak, floor) in rows.items():
        label = f"{args.unique}Lx{args.loops} tied" if name == "tied" else f"{depth}L untied"
        label += " + checkpoint" if ckpt else ""
        wmib = weight_bytes(tied if name == "tied" else untied) / MiB
        print(
            f"{label:<28} {wmib:11.1f} {sec:7.3f} {peak / MiB:9.1f} {floor / MiB:7.1f} "
            f"{(peak - floor) / MiB:8.1f}"
        )
    t, u = rows[("tied", False)], rows[("untied", False)]
    tc, uc = rows[("tied", True)], rows[("untied", True)]
    print("\nratios (measured side by side in this run):")
    print(f"  weights tied / untied               {weight_bytes(tied) / weight_bytes(untied):.2f}x")
    print(f"  step time tied / untied             {t[0] / u[0]:.2f}x")
    print(f"  peak memory tied / untied           {t[1] / u[1]:.2f}x")
    print(f"  checkpoint peak / plain, tied       {tc[1] / t[1]:.2f}x  (time {tc[0] / t[0]:.2f}x)")
    print(f"  checkpoint peak / plain, untied     {uc[1] / u[1]:.2f}x  (time {uc[0] / u[0]:.2f}x)")
    print(
        f"  checkpoint act+tmp / plain, tied    {(tc[1] - tc[2]) / max(t[1] - t[2], 1):.2f}x; "
        f"untied {(uc[1] - uc[2]) / max(u[1] - u[2], 1):.2f}x"
    )
    if args.scaling:
        scaling(args, x, y)


def scaling(args, x, y):
    """Peak above the resident weights vs loop count for a 3-layer P1 C1 Q1 model and an untied
    model of the same depth: the slope is what each extra block call keeps alive."""
    print("\nextra peak MiB per forward+backward (3 unique layers, P1 C1 Q1) vs untied same depth")
    print(f"{'loops':>5} {'depth':>5} {'tied':>7} {'tied+ck':>8} {'untied':>7} {'untied+ck':>9}")
    for n in (1, 2, 4, 8):
        cfg = config(args.hidden, 3, args.vocab)
        tied, _ = unroll(build_model(cfg), cfg, loops=n)
        untied = build_model(config(args.hidden, tied.args.effective_depth, args.vocab))
        mx.eval(tied.parameters(), untied.parameters())
        out = []
        for model in (tied, untied):
            for ckpt in (False, True):
                model.model.checkpoint = ckpt
                mx.clear_cache()
                base = mx.get_active_memory()
                mx.reset_peak_memory()
                loss, grads = nn.value_and_grad(model, loss_fn)(model, x, y)
                mx.eval(loss, grads)
                out.append((mx.get_peak_memory() - base) / MiB)
                del loss, grads
        print(
            f"{n:>5} {tied.args.effective_depth:>5} "
            + " ".join(f"{v:{w}.1f}" for v, w in zip(out, (7, 8, 7, 9)))
        )


if __name__ == "__main__":
    main()
