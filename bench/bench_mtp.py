"""Self-speculative MTP decoding on a real model, everything from one run.

    python bench/bench_mtp.py runs/mtp/model --results /tmp/mtp/bench.json [--reps 3]

MODEL is a model with MTP heads (``bench/mtp_train.py`` writes one); its trunk is the plain
baseline, in the same process. Prompts: the first ``--prompts`` chat prompts of the bundled valid
split (never used for head training: ``mtp_train.py`` reads the train split and drops any prompt
equal to a held-out one), ``--tokens`` new tokens each, no stop token (every reply has the same
length). Sections, each saved to ``--results`` as it finishes (a rerun skips finished ones):

  size     heads' parameters and fp32 bytes beside the trunk's; training tokens and time
  verify   one trunk pass over K+1 tokens vs one plain decode step (both synchronous, to the
           greedy tokens; cache of the first prompt + 64 generated tokens), K = 1..4, for each
           decode-kernel arm in turn (``_smallm.c``'s register tiles and the untiled path before
           them): wall time (median, fastest) and CPU time; drafting k tokens, in plain steps
  greedy   per repetition, alternating: plain, every fixed K (first repetition only; acceptance
           does not depend on timing), the best K, adaptive drafting. Output checked identical to
           plain; accepted length = tokens per verify pass (bonus included); speedup per
           repetition, median and range; per-reply adaptive/plain minimum
  sample   T = 0.7, plain vs the best greedy K (``--sample-reps``), per-prompt seeds: accepted
           length and speedup

The speedup a memory-bound machine would see (a verify pass over K+1 tokens costing one step)
is printed beside the measured one: accepted length / (1 + drafting cost in steps).
"""

# ruff: noqa: I001  (cherry_mlx must be imported before mlx)
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cherry_mlx  # noqa: F401  (fast BLAS: must come before mlx)
import mlx.core as mx
from mlx.utils import tree_flatten

from cherry_mlx.decoding.adaptive import AdaptiveDraft
from cherry_mlx import _blas
from cherry_mlx.decoding.generate import (
    GenerationStats,
    generate_tokens,
    prefill,
    target_logprobs,
)
from cherry_mlx.decoding.settings import SamplingConfig
from cherry_mlx.decoding.speculative import (
    head_acceptance,
    make_drafter,
    speculative_generate_tokens,
)
from cherry_mlx.models.loading import load_model, load_tokenizer
from cherry_mlx.pipelines.context import chat_prompts


def size_section(model, path: Path) -> dict:
    p = dict(tree_flatten(model.parameters()))
    heads = sum(v.size for k, v in p.items() if k.startswith("mtp."))
    trunk = sum(v.size for k, v in p.items() if not k.startswith("mtp."))
    fit = path / "mtp_fit.json"
    return {
        "heads_params": int(heads), "trunk_params": int(trunk),
        "heads_bytes": int(heads * 4), "trunk_bytes": int(trunk * 4),
        "num_heads": model.mtp.num_heads,
        "draft_vocab": len(model.args.mtp.get("draft_vocab") or []) or model.args.vocab_size,
        "training": json.loads(fit.read_text()) if fit.exists() else None,
    }  # fmt: skip


def _median_time(fn, reps):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _kernel_arms() -> list:
    """The decode-kernel arms this process can switch between: tiled (the default) and the
    untiled path it replaced, or just the one in use when the shim is not loaded."""
    return ["tiled", "untiled"] if _blas.use_tiled_kernel(True) else [_blas.smallm_status]


def verify_section(model, prompt, reps=15, rounds=3) -> dict:
    """Plain step vs verify pass over K+1 tokens (interleaved), per decode-kernel arm, and
    drafting k tokens (tiled arm)."""
    cache = model.make_cache()
    ctx = list(prompt) + [int(t) for t in generate_tokens(model, prompt, max_tokens=64)]
    h0 = prefill(model, mx.array(ctx[:-1], dtype=mx.int32), cache)
    cfg = SamplingConfig()

    def trunk_pass(m):  # what a plain step (m = 1) or a verify pass does, to the greedy tokens
        x = mx.array(ctx[-1:] * m, dtype=mx.int32)[None]
        logits = model.logits(model.hidden(x, cache=cache))[0]  # (m, V)
        mx.eval(mx.argmax(target_logprobs(logits, None, cfg), axis=-1))
        for c in cache:
            c.trim(m)

    arms = _kernel_arms()
    for arm in arms:
        _blas.use_tiled_kernel(arm != "untiled")
        for m in range(1, 6):
            trunk_pass(m)  # warm-up
    times = {a: {m: [] for m in range(1, 6)} for a in arms}  # every pass's wall time
    cpu = {a: {m: [] for m in range(1, 6)} for a in arms}  # and its CPU time (all threads)
    for _ in range(rounds):  # interleaved rounds: load changes hit every arm alike
        for m in range(1, 6):
            for arm in arms:
                _blas.use_tiled_kernel(arm != "untiled")
                for _ in range(reps):
                    t, c = time.perf_counter(), time.process_time()
                    trunk_pass(m)
                    times[arm][m].append(time.perf_counter() - t)
                    cpu[arm][m].append(time.process_time() - c)
    _blas.use_tiled_kernel(True)
    out = {"context": len(ctx) - 1, "reps": reps, "rounds": rounds, "arms": {}}
    for arm in arms:
        med = {m: statistics.median(ts) for m, ts in times[arm].items()}
        low = {m: min(ts) for m, ts in times[arm].items()}  # least disturbed by other processes
        out["arms"][arm] = {
            "step_ms": 1e3 * med[1],
            "verify_steps": {k: med[k + 1] / med[1] for k in range(1, 5)},
            "step_ms_min": 1e3 * low[1],
            "verify_steps_min": {k: low[k + 1] / low[1] for k in range(1, 5)},
        }
        # CPU time hardly counts the time other processes hold the cores: on a shared machine
        # its ratios are the steadier ones
        c = {m: statistics.median(ts) for m, ts in cpu[arm].items()}
        out["arms"][arm]["step_cpu_ms"] = 1e3 * c[1]
        out["arms"][arm]["verify_steps_cpu"] = {k: c[k + 1] / c[1] for k in range(1, 5)}
    out.update(out["arms"][arms[0]])  # the default arm, as read by the greedy summary
    drafter = make_drafter(model)
    draft = {}
    for k in range(1, drafter.K + 1):
        times = []
        for _ in range(reps):
            drafter.reset(0)
            drafter.observe(h0[:, :-1], 0)  # states through len-3: the previous round's view
            mx.eval(drafter.draft(ctx[:-1], cfg, k)[0])  # catch-up over the context, not timed
            drafter.commit(len(ctx) - 3, 0)  # that round's drafts rejected
            drafter.observe(h0[:, -1:], len(ctx) - 2)
            t = time.perf_counter()
            mx.eval(drafter.draft(ctx, cfg, k)[0])  # one round's drafting, as in decoding
            times.append(time.perf_counter() - t)
        draft[k] = statistics.median(times) / (out["step_ms"] / 1e3)
    out["draft_steps"] = draft
    return out


def run_plain(model, prompts, n, cfg, seeds):
    outs, walls, st = [], [], GenerationStats()
    for p, sd in zip(prompts, seeds):
        mx.random.seed(sd)
        t = time.perf_counter()
        outs.append(list(generate_tokens(model, p, cfg, max_tokens=n, stats=st)))
        walls.append(time.perf_counter() - t)
    return outs, walls, st


def run_spec(model, prompts, n, cfg, seeds, k=None, adaptive=False):
    outs, walls, st = [], [], GenerationStats()
    ctrl = AdaptiveDraft(k or model.mtp.num_heads) if adaptive else False
    for p, sd in zip(prompts, seeds):
        mx.random.seed(sd)
        t = time.perf_counter()
        gen = speculative_generate_tokens(model, p, cfg, max_tokens=n, stats=st, num_draft=k,
                                          seed=sd, adaptive=ctrl)  # fmt: skip
        outs.append(list(gen))
        walls.append(time.perf_counter() - t)
    return outs, walls, st


def arm_record(walls, base_walls, st, outs=None, ref=None):
    r = {
        "speedup": sum(base_walls) / sum(walls),
        "per_reply": [b / w for b, w in zip(base_walls, walls)],
        "accepted_length": st.mean_accepted,
        "head_acceptance": head_acceptance(st),
        "rounds": st.rounds,
        "decode_s": st.decode_s,
        "tokens_in_rounds": (st.accepted + st.rounds) / max(st.generated, 1),
    }
    if ref is not None:
        r["identical"] = outs == ref
    return r


def timing_section(
    model, prompts, n, reps, cfg, all_k: bool, best=None, adaptive=True, kernels=("tiled",)
) -> dict:
    """Per repetition, for each decode-kernel arm in turn (``--kernel both``: the untiled arm's
    records are named "untiled ..."): plain, then the speculative arms, against that plain."""
    K = model.mtp.num_heads
    seeds = list(range(len(prompts)))
    run_spec(model, prompts[:1], 8, cfg, seeds)  # warm-up
    run_plain(model, prompts[:1], 8, cfg, seeds)
    reps_out = []
    for rep in range(reps):
        row = {"arms": {}}
        for kern in kernels:
            _blas.use_tiled_kernel(kern == "tiled")
            pre = "" if kern == "tiled" else f"{kern} "
            ref, base, st0 = run_plain(model, prompts, n, cfg, seeds)
            row[f"{pre}plain_tps".replace(" ", "_")] = st0.decode_tps
            row[f"{pre}plain_wall".replace(" ", "_")] = sum(base)
            ks = range(1, K + 1) if (rep == 0 and all_k) or best is None else [best]
            arms = {}
            for k in ks:
                outs, walls, st = run_spec(model, prompts, n, cfg, seeds, k)
                arms[f"K={k}"] = arm_record(walls, base, st, outs, ref if cfg.greedy else None)
            if best is None:
                best = max(ks, key=lambda k: arms[f"K={k}"]["speedup"])
            if adaptive:
                outs, walls, st = run_spec(model, prompts, n, cfg, seeds, adaptive=True)
                arms["adaptive"] = arm_record(walls, base, st, outs, ref if cfg.greedy else None)
            row["arms"].update({pre + a: r for a, r in arms.items()})
            print(f"  rep {rep + 1} {kern}: plain {st0.decode_tps:.1f} tok/s; " + "; ".join(
                f"{a} {r['speedup']:.2f}x ({r['accepted_length']:.2f} tok/pass)"
                for a, r in arms.items()), flush=True)  # fmt: skip
        _blas.use_tiled_kernel(True)
        reps_out.append(row)
    return {"best_k": best, "kernels": list(kernels), "reps": reps_out}


def _pct(xs) -> str:
    return ", ".join(f"{x:.0%}" for x in xs)


def summarize(res: dict, tokens: int, n_prompts: int) -> None:
    sz = res.get("size")
    if sz:
        hp, tp = sz["heads_params"], sz["trunk_params"]
        hb, tb = sz["heads_bytes"] / 2**20, sz["trunk_bytes"] / 2**20
        print(f"heads: {sz['num_heads']}, {hp / 1e6:.2f}M params, {hb:.1f} MiB fp32 "
              f"({hp / tp:.1%} of the trunk's {tp / 1e6:.1f}M params, {tb:.0f} MiB); "
              f"draft vocabulary {sz['draft_vocab']}")  # fmt: skip
        t = sz.get("training")
        if t:
            c = t["cache"]
            print(f"training: cache of {c['sequences']} own generations, {c['tokens']} tokens "
                  f"({c['reply_tokens']} generated in {c['generation_s']:.0f} s); heads "
                  f"{t['step']} steps over {t['positions']} positions in {t['train_s']:.0f} s; "
                  f"agreement with the trunk on held-back cached sequences "
                  f"{_pct(t.get('agreement_valid') or [])}")  # fmt: skip
    v = res.get("verify")
    if v:
        for arm, a in (v.get("arms") or {"": v}).items():
            ver = ", ".join(f"K={k}: {c:.2f}" for k, c in a["verify_steps"].items())
            print(f"{arm + ' kernel: ' if arm else ''}plain step {a['step_ms']:.0f} ms; verify "
                  f"pass over K+1 tokens in plain steps: {ver} (medians)")  # fmt: skip
            if "verify_steps_min" in a:
                low = ", ".join(f"K={k}: {c:.2f}" for k, c in a["verify_steps_min"].items())
                print(f"  fastest passes: plain step {a['step_ms_min']:.0f} ms; verify: {low}")
            if "verify_steps_cpu" in a:
                c = ", ".join(f"K={k}: {x:.2f}" for k, x in a["verify_steps_cpu"].items())
                print(f"  CPU time: plain step {a['step_cpu_ms']:.0f} ms; verify: {c}")
        dra = ", ".join(f"k={k}: {c:.2f}" for k, c in v["draft_steps"].items())
        print(f"drafting k tokens in plain steps: {dra}")
    for name, title in (("greedy", "greedy"), ("sample", "sampling T=0.7")):
        g = res.get(name)
        if g:
            _timing_summary(g, title, v, tokens, n_prompts)


def _timing_summary(g: dict, title: str, v, tokens: int, n_prompts: int) -> None:
    print(f"\n{title}: {n_prompts} held-out prompts x {tokens} tokens, {len(g['reps'])} reps "
          f"(plain and speculative alternating in one process)")  # fmt: skip
    arms = {}
    for rep in g["reps"]:
        for a, r in rep["arms"].items():
            arms.setdefault(a, []).append(r)
    for key in [k for k in g["reps"][0] if k.endswith("plain_tps")]:
        plain = [rep[key] for rep in g["reps"]]
        med = statistics.median(plain)
        name = key[: -len("_tps")].replace("_", " ")
        print(f"  {name}: {med:.2f} tok/s (median; range {min(plain):.2f}-{max(plain):.2f})")
    for a, rs in arms.items():
        sp = [r["speedup"] for r in rs]
        acc = statistics.median(r["accepted_length"] for r in rs)
        line = (f"  {a}: {statistics.median(sp):.2f}x plain (range {min(sp):.2f}-{max(sp):.2f}, "
                f"{len(sp)} reps), accepted length {acc:.2f} tok/pass, head acceptance "
                f"[{_pct(rs[0]['head_acceptance'])}]")  # fmt: skip
        if v and a.startswith("K="):
            k = a[2:]
            draft = v["draft_steps"][k]
            line += f", memory-bound estimate {acc / (1 + draft):.2f}x"
            # where a round's time goes: verify and drafting (measured alone) and the rest
            rnd = statistics.median(r["decode_s"] / max(r["rounds"], 1) for r in rs) * 1e3
            ver = v["verify_steps"][k] * v["step_ms"]
            dr = draft * v["step_ms"]
            line += f"; a round {rnd:.0f} ms = verify {ver:.0f} + drafting {dr:.0f} + other "
            line += f"{rnd - ver - dr:.0f}"
        if "identical" in rs[0]:
            line += f", identical to plain: {all(r['identical'] for r in rs)}"
        if a == "adaptive":
            worst = min(statistics.median(r["per_reply"][i] for r in rs) for i in range(n_prompts))
            line += f"; slowest reply {worst:.2f}x plain (median over reps)"
        print(line)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--results", type=Path, required=True)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sample-reps", type=int, default=3)
    ap.add_argument("--sections", default="size,verify,greedy,sample")
    ap.add_argument("--redo", default="", help="sections to rerun even if saved")
    ap.add_argument("--verify-reps", type=int, default=15, help="passes per timing (median)")
    ap.add_argument("--verify-rounds", type=int, default=3, help="interleaved rounds (median)")
    ap.add_argument("--kernel", choices=["tiled", "untiled", "both"], default="tiled",
                    help="decode-kernel arm(s) for the greedy and sample sections (both: "
                    "alternating in each repetition)")  # fmt: skip
    args = ap.parse_args(argv)
    res = json.loads(args.results.read_text()) if args.results.exists() else {}
    model = load_model(args.model)[0]
    model.eval()
    tok = load_tokenizer(args.model)
    prompts = chat_prompts(tok, None, args.prompts)
    t0 = time.perf_counter()
    for sec in args.sections.split(","):
        if sec in res and sec not in args.redo.split(","):
            continue
        print(f"[{sec}] ...", flush=True)
        if sec == "size":
            res[sec] = size_section(model, args.model)
        elif sec == "verify":
            res[sec] = verify_section(model, prompts[0], args.verify_reps, args.verify_rounds)
        kernels = ("tiled", "untiled") if args.kernel == "both" else (args.kernel,)
        if sec == "greedy":
            res[sec] = timing_section(
                model, prompts, args.tokens, args.reps, SamplingConfig(), True, kernels=kernels
            )
        elif sec == "sample":
            cfg = SamplingConfig(temp=0.7)
            best = res.get("greedy", {}).get("best_k")
            res[sec] = timing_section(
                model, prompts, args.tokens, args.sample_reps, cfg, False, best, adaptive=False,
                kernels=kernels,
            )  # fmt: skip
        res.setdefault("seconds", {})[sec] = round(time.perf_counter() - t0, 1)
        args.results.write_text(json.dumps(res, indent=1))
    print()
    summarize(json.loads(json.dumps(res)), args.tokens, len(prompts))  # str keys, as when reloaded
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
