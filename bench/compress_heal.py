"""Compression arms on a real model at equal healing compute, staged and resumable.

Each stage is one arm (or the source's evaluation); its result is written to the results JSON as
soon as it finishes, and ``--stage next`` runs the first unfinished one, so a loop of

    flock /tmp/cherry-heavy.lock python bench/compress_heal.py --stage next

takes the shared lock one arm at a time. Every arm heals with the same end-to-end budget
(``--kd-steps`` x ``--batch`` rows of ``--seq-len`` tokens from the same teacher cache); arms with
local healing also spend ``--local-steps`` block-local steps (their wall time is recorded).
Held-out sets (never healed on): windows of the bundled English prose's valid split, and the
English examples of the bundled chat valid split (response tokens). ``bench/compression_report.py``
turns the results into ``docs/compression.md`` and a plot.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# isort: off
import cherry_mlx  # noqa: E402,F401  (first: it connects the fast BLAS before mlx loads)

# isort: on
import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
from compression_report import BATTERY_PATTERNS, scored  # noqa: E402

from cherry_mlx.compression.distill_heal import distill, rows_loss  # noqa: E402
from cherry_mlx.compression.local_heal import fit_local, unit_errors  # noqa: E402
from cherry_mlx.compression.student import build_student  # noqa: E402
from cherry_mlx.data.jsonl import iter_jsonl  # noqa: E402
from cherry_mlx.data.teacher_cache import TeacherCache, model_fingerprint  # noqa: E402
from cherry_mlx.models.loading import load_model, load_tokenizer  # noqa: E402
from cherry_mlx.training.teacher import text_rows  # noqa: E402

# name: (unique layers, loops, grouping, method, init, heal objective, local healing)
ARMS = {  # in the order --stage next runs them (most informative first)
    "15L prune-bi+local+distill": (15, 1, "uniform", "prune-bi", "average", "distill", True),
    "6Lx8 prune-loop+local+distill": (6, 8, "uniform", "prune-loop", "average", "distill", True),
    "15L avg+sgt (paper)": (15, 1, "uniform", "average", "average", "sgt", False),
    "15L avg+local+distill": (15, 1, "uniform", "average", "average", "distill", True),
    "6L prune-loop+local+distill": (6, 1, "uniform", "prune-loop", "average", "distill", True),
    "15L prune-bi+distill": (15, 1, "uniform", "prune-bi", "average", "distill", False),
    "15L similarity+local+distill": (15, 1, "similarity", "average", "average", "distill", True),
    "15L avg+distill": (15, 1, "uniform", "average", "average", "distill", False),
    "6Lx8 avg+local+distill": (6, 8, "uniform", "average", "average", "distill", True),
    "6Lx8 avg+sgt (paper)": (6, 8, "uniform", "average", "average", "sgt", False),
    "15L best-init+local+distill": (15, 1, "uniform", "average", "best", "distill", True),
}

# questions and the answer patterns (regex on the lowercased answer), written once, not tuned
BATTERY = [(q, [p]) for q, p in BATTERY_PATTERNS]


def heal_text(path: Path) -> Path:
    """The healing text: the bundled English prose (train split) and 100 English chat examples
    of the bundled train split (seed-0 shuffle)."""
    import random

    rows = list(iter_jsonl(ROOT / "weights/data/prose/en.jsonl"))
    chat = [r for r in iter_jsonl(ROOT / "weights/data/default/train.jsonl")
            if str(r.get("id", "")).endswith(":en")]  # fmt: skip
    random.Random(0).shuffle(chat)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows + chat[:100]))
    return path


def ensure_cache(args):
    """Build (or finish) the teacher cache the arms heal from."""
    from cherry_mlx.training.teacher import build_cache
    from cherry_mlx.training.teacher_config import TeacherConfig

    text = heal_text(Path(args.cache).parent / "heal.jsonl")
    cfg = TeacherConfig(model=args.model, out=args.cache, data=str(text), seq_len=args.seq_len,
                        rows_per_shard=32, hidden_layers="all")  # fmt: skip
    build_cache(cfg)


class Interleaved:
    """End-to-end healing batches alternating between the main cache (teacher-forced text) and
    a second one (e.g. the source's own chat replies, ``teacher build --origin generate``), so
    the student sees the source's answers as well as its prose."""

    def __init__(self, main, other):
        self.main, self.other = main, other
        self.rows = main.rows

    def batches(self, batch_size, seed=0, epochs=None, keys=None, rows=None):
        a = self.main.batches(batch_size, seed=seed, epochs=epochs, keys=keys, rows=rows)
        b = self.other.batches(batch_size, seed=seed, epochs=epochs, keys=keys)
        for x, y in zip(a, b):
            yield x
            yield y


def held_out(tokenizer, seq_len: int, chat_examples: int):
    prose = list(iter_jsonl(ROOT / "weights/data/prose/en.valid.jsonl"))
    chat = [r for r in iter_jsonl(ROOT / "weights/data/default/valid.jsonl")
            if str(r.get("id", "")).endswith(":en")][:chat_examples]  # fmt: skip
    return text_rows(prose, tokenizer, seq_len), text_rows(chat, tokenizer, seq_len)


def battery(model, tokenizer, max_tokens: int = 24):
    from mlx_lm.generate import batch_generate

    chat = [[{"role": "user", "content": q}] for q, _ in BATTERY]
    prompts = [tokenizer.apply_chat_template(m, add_generation_prompt=True) for m in chat]
    res = batch_generate(model, tokenizer, prompts, max_tokens=max_tokens)
    answers = [t.strip() for t in res.texts]
    right = scored(answers)
    return {"answers": answers, "right": right, "score": int(sum(right))}


def evaluate(model, sets, chat: bool = True):
    prose, chat_rows = sets
    out = {"prose": rows_loss(model, prose)}
    if chat:
        out["chat"] = rows_loss(model, chat_rows)
    return out


def run_arm(name, args, source, source_cfg, cache, sets, tokenizer):
    unique, loops, grouping, method, init, objective, local = ARMS[name]
    mx.random.seed(args.seed)
    t0 = time.perf_counter()
    model, cfg, groups, units, info = build_student(
        source, source_cfg, cache, unique, grouping, method, init, loops,
        calib_rows=range(args.calib_rows),
    )  # fmt: skip
    mx.eval(model.parameters())
    row = {"arm": name + args.suffix, "unique": unique, "loops": loops, "grouping": grouping,
           "method": method,
           "init": init, "objective": objective, "local": local, "groups": groups,
           "kept": info.get("kept"), "effective_depth": len(model.model.schedule)}  # fmt: skip
    curve = [{"tokens": 0, "stage": "built", **evaluate(model, sets, chat=False)}]
    print(f"{name}: built, prose {curve[0]['prose']:.3f}", flush=True)
    calib = list(range(args.calib_rows))
    heal_rows = list(range(cache.rows))
    if local:
        t1 = time.perf_counter()
        row["unit_error_before"] = unit_errors(model.layers, units, cache, calib[:8])
        row["local_history"] = fit_local(
            model.layers, units, cache, args.local_steps, args.local_lr, args.batch * 2,
            args.seed, heal_rows,
        )  # fmt: skip
        row["unit_error_after"] = unit_errors(model.layers, units, cache, calib[:8])
        row["local_seconds"] = time.perf_counter() - t1
        curve.append({"tokens": 0, "stage": "local", **evaluate(model, sets, chat=False)})
        print(f"{name}: after local healing, prose {curve[-1]['prose']:.3f}", flush=True)
    t2 = time.perf_counter()
    kd_cache = Interleaved(cache, args.mix) if args.mix is not None else cache
    hist = distill(model, kd_cache, args.kd_steps, lr=args.lr, batch_size=args.batch,
                   temperature=args.temperature, lam=args.lam if objective == "sgt" else 0.0,
                   objective=objective, seed=args.seed, rows=heal_rows,
                   on_eval=lambda s: evaluate(model, sets, chat=False),
                   eval_every=args.eval_every)  # fmt: skip
    row["e2e_seconds"] = time.perf_counter() - t2
    curve += [{"stage": "e2e", **h} for h in hist]
    row["curve"] = curve
    row["final"] = evaluate(model, sets)
    row["battery"] = battery(model, tokenizer)
    row["seconds"] = time.perf_counter() - t0
    print(f"{name}: final {row['final']}, battery {row['battery']['score']}/10", flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="/tmp/compress/smollm2")
    ap.add_argument("--cache", default="/tmp/compress/tc-heal")
    ap.add_argument("--results", default=str(ROOT / "bench/results/compress_heal.json"))
    ap.add_argument("--stage", default="next", help="next, all, source, or an arm name")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--kd-steps", type=int, default=24)
    ap.add_argument("--local-steps", type=int, default=40)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--local-lr", type=float, default=3e-4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--lam", type=float, default=0.7)
    ap.add_argument("--eval-every", type=int, default=12)
    ap.add_argument("--calib-rows", type=int, default=32)
    ap.add_argument("--chat-examples", type=int, default=32)
    ap.add_argument("--mix-cache", default="",
                    help="a second teacher cache whose batches alternate with the main one's "
                    "in end-to-end healing (e.g. the source's own chat replies)")  # fmt: skip
    ap.add_argument("--arms", default="", help="comma-separated subset of arms, in order")
    ap.add_argument(
        "--max-minutes",
        type=float,
        default=0.0,
        help="--stage all: start no new stage after this long (0: no limit)",
    )
    args = ap.parse_args()

    path = Path(args.results)
    results = json.loads(path.read_text()) if path.exists() else {"stages": {}}
    budget = {k: getattr(args, k) for k in ("seed", "seq_len", "batch", "kd_steps", "local_steps",
                                             "lr", "local_lr", "temperature", "lam",
                                             "chat_examples", "calib_rows",
                                             "mix_cache")}  # fmt: skip
    results.setdefault("budget", budget)
    order = ["source"] + ([a.strip() for a in args.arms.split(",")] if args.arms else list(ARMS))
    args.suffix = " (+ own chat replies)" if args.mix_cache else ""
    key = lambda n: n if n == "source" else f"{n}{args.suffix} | seed {args.seed}"  # noqa: E731
    if args.stage == "next":
        todo = [n for n in order if key(n) not in results["stages"]][:1]
    elif args.stage == "all":
        todo = [n for n in order if key(n) not in results["stages"]]
    else:
        todo = [args.stage]
    if not todo:
        print("all stages done")
        return
    ensure_cache(args)  # finished shards are skipped: instant when the cache is complete
    source, source_cfg = load_model(args.model)
    source.eval()
    tokenizer = load_tokenizer(args.model)
    fingerprint = model_fingerprint(args.model)
    cache = TeacherCache.open(args.cache, fingerprint=fingerprint)
    args.mix = None
    if args.mix_cache:
        args.mix = TeacherCache.open(args.mix_cache, fingerprint=fingerprint)
        results["mix_cache"] = {"path": args.mix_cache, "rows": args.mix.rows,
                                "tokens": args.mix.tokens}  # fmt: skip
    results["cache"] = {"path": args.cache, "rows": cache.rows, "tokens": cache.tokens,
                        "k": cache.k, "seq_len": cache.seq_len}  # fmt: skip
    results["battery_questions"] = [q for q, _ in BATTERY]
    sets = held_out(tokenizer, args.seq_len, args.chat_examples)
    results["held_out"] = {"prose_tokens": int(sets[0]["response"].sum()),
                           "chat_tokens": int(sets[1]["response"].sum())}  # fmt: skip
    started = time.perf_counter()
    for name in todo:
        if args.max_minutes and time.perf_counter() - started > args.max_minutes * 60:
            print(f"stopping after {args.max_minutes} minutes; rerun to continue", flush=True)
            break
        t0 = time.perf_counter()
        if name == "source":
            row = {"final": evaluate(source, sets), "battery": battery(source, tokenizer)}
            row["seconds"] = time.perf_counter() - t0
            print(f"source: {row['final']}, battery {row['battery']['score']}/10", flush=True)
        else:
            row = run_arm(name, args, source, source_cfg, cache, sets, tokenizer)
            row["seed"] = args.seed
        row["budget"] = budget
        results["stages"][key(name)] = row
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        tmp.write_text(json.dumps(results, indent=1, default=float) + "\n")
        os.replace(tmp, path)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
