"""Train MTP heads on the source model's own replies, in resumable stages.

    python bench/mtp_train.py MODEL --work DIR --stage gen   [--gen-budget-s 900]
    python bench/mtp_train.py MODEL --work DIR --stage train [--steps N --train-budget-s 900]
    python bench/mtp_train.py MODEL --work DIR --stage next  # whichever is unfinished
    python bench/mtp_train.py MODEL --work DIR --stage all   # gen to its budget, then train

``gen`` answers the training split's chat prompts (first turns; any prompt equal to a held-out
one is dropped) with batched generation into the teacher cache (``training.teacher``, origin
``generate``, the last layer's states, at ``--temp``; the same cache ``cherry-mlx teacher build
--origin generate --hidden-layers last`` writes). ``train`` fits the heads on that cache only
(``training.mtp_fit``):
no trunk forward per step. Both stop at their time budget and go on where they stopped; the
model with heads is written to DIR/model (also when training stops at its budget). Run under
the shared lock on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import cherry_mlx  # noqa: F401  (BLAS set-up before mlx)
from cherry_mlx.data.jsonl import read_jsonl
from cherry_mlx.decoding.chat import render
from cherry_mlx.models.loading import load_model, load_tokenizer
from cherry_mlx.training.data import default_data_dir
from cherry_mlx.training.teacher import build_cache
from cherry_mlx.training.teacher_config import TeacherConfig

CHUNK = 4  # shards generated between time-budget checks


def first_turn_prompts(tokenizer, path: Path):
    out = []
    for ex in read_jsonl(path):
        msgs = ex.get("messages") or []
        first = next((i for i, m in enumerate(msgs) if m["role"] == "assistant"), None)
        if first:
            out.append(render(tokenizer, msgs[:first]))
    return out


def training_prompts(tokenizer, seed: int = 0):
    """Unique first-turn prompts of train.jsonl minus any equal to a valid/test prompt."""
    d = default_data_dir()
    held = {
        tuple(p)
        for s in ("valid.jsonl", "test.jsonl")
        for p in first_turn_prompts(tokenizer, d / s)
    }
    seen, out, dropped = set(), [], 0
    for p in first_turn_prompts(tokenizer, d / "train.jsonl"):
        t = tuple(p)
        if t in held:
            dropped += 1
        elif t not in seen:
            seen.add(t)
            out.append(p)
    random.Random(seed).shuffle(out)
    return out, dropped


def stage_gen(args, model, tok) -> bool:
    prompts, dropped = training_prompts(tok)
    n_prompts = min(len(prompts), args.max_prompts)
    print(
        f"gen: {n_prompts} of {len(prompts)} training prompts "
        f"({dropped} equal to held-out ones dropped)"
    )
    # no stop token by default: the benchmark (like repro) decodes 128 tokens past the end of a
    # reply, and a batch row that stopped would cost as much as one that goes on
    longest = max(len(p) for p in prompts[:n_prompts]) + args.max_tokens
    cfg = dict(model=str(args.model), out=str(args.work / "cache"), origin="generate",
               data="training split prompts", k=4, seq_len=min(longest, 1024),
               rows_per_shard=args.gen_batch, batch_size=args.gen_batch, hidden_layers="last",
               max_new_tokens=args.max_tokens, temperature=args.temp,
               stop_at_eos=args.stop_at_eos)  # fmt: skip
    t0, rows, step = time.perf_counter(), 0, CHUNK * args.gen_batch
    while rows < n_prompts and time.perf_counter() - t0 < args.gen_budget_s:
        rows = min(rows + step, n_prompts)  # whole shards, so a longer run resumes exactly
        build_cache(TeacherConfig(**cfg, max_rows=rows), prompts=prompts[:n_prompts], tokenizer=tok)
    done = rows >= n_prompts
    if not done:
        print(f"gen: time budget reached after {rows} prompts (rerun to go on)")
    return done


def stage_train(args, model, tok) -> bool:
    from cherry_mlx.training.mtp_fit import FitConfig, fit_heads

    cfg = FitConfig(heads=args.heads, steps=args.steps, batch_size=args.batch_size,
                    learning_rate=args.lr, feature_weight=args.feature_weight,
                    draft_vocab=args.draft_vocab, seed=0)  # fmt: skip
    res = fit_heads(model, args.work / "cache", args.work / "heads", cfg,
                    budget_s=args.train_budget_s, out_model=args.work / "model",
                    source_dir=args.model)  # fmt: skip
    print("train:", json.dumps(res))
    return res["done"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--stage", choices=("gen", "train", "next", "all"), default="next")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--max-prompts", type=int, default=100000)
    ap.add_argument("--stop-at-eos", action="store_true")
    ap.add_argument("--temp", type=float, default=0.0, help="sampling temperature of the replies")
    ap.add_argument("--gen-batch", type=int, default=48)
    ap.add_argument("--gen-budget-s", type=float, default=900)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--feature-weight", type=float, default=1.0)
    ap.add_argument("--draft-vocab", type=int, default=4096)
    ap.add_argument("--train-budget-s", type=float, default=900)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    model = load_model(args.model)[0]
    tok = load_tokenizer(args.model)
    args.work.mkdir(parents=True, exist_ok=True)
    stage = args.stage
    if stage == "next":
        stage = "train" if (args.work / "cache" / "gen.done").exists() else "gen"
    if stage in ("gen", "all") and not (args.work / "cache" / "gen.done").exists():
        # "all" ends generation at its budget (the cache is what it is) and trains on it
        if stage_gen(args, model, tok) or stage == "all":
            (args.work / "cache" / "gen.done").write_text("done\n")
    if stage in ("train", "all"):
        stage_train(args, model, tok)
    print(f"stage {stage}: {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
