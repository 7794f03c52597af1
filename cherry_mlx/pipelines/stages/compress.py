"""Stage 2 of ``repro``: depth compression (Tables 5, C.1, C.2) with the baselines the paper lacks.

For each budget layout (depth // divisor unique layers, looped k times) the source is merged by
averaging adjacent layers, SGT-healed before and after unrolling (``compress``'s pipeline), and
scored by the recovered fraction of the merge gap and held-out perplexity. The gap is read
against the source trained for the same SGT steps (the control), which has seen the healing
data as the paper's merged model had (its 0.994 is the trained model's loss); the fraction
against the untrained source, ``compress``'s own reading, is shown beside it. At the first layout
(no loop) averaging is compared with the two pruning baselines (``--method prune-bi``, ShortGPT;
``prune-angular``, Gromov et al.), healed with the same SGT steps; and the uncompressed source is
trained for the same total steps (``--control``), the reference a compressed model should meet.

Beside the paper's SGT healing, the same compressions healed from the source's own signal
(``compress --heal-with distill``): a teacher cache of the source over the chat training data,
built once per repro directory, gives block-local healing (each kept or merged layer fitted to
the source layers it stands for) and then end-to-end KL to the source's top-k logits, for as
many end-to-end steps of the same batch and learning rate as an SGT arm's pre-unroll + heal
steps. Arms: prune-bi and average at the first layout (half depth), prune-loop (first, last and
the most influential layers kept, the middle looped) at the most compressed looped layout; each
is read against the paper's arm (average + SGT) at its layout.
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Tuple

import mlx.core as mx

from cherry_mlx.compression.config import CompressConfig
from cherry_mlx.compression.distill_heal import distill
from cherry_mlx.compression.heal import (
    Data,
    control_stage,
    evaluate,
    recovered_fraction,
    run_pipeline,
)
from cherry_mlx.compression.local_heal import fit_local
from cherry_mlx.compression.student import build_student
from cherry_mlx.evaluation.verdict import claim_row, summary
from cherry_mlx.pipelines.context import Context, StageBar
from cherry_mlx.pipelines.report import fmt, mean
from cherry_mlx.pipelines.stage import Stage

PRUNING = ("prune-bi", "prune-angular")
DISTILLED = "+local+distill"  # label suffix of the arms healed from the teacher cache
PAPER_RECOVERY = "81-84% for 24L×2 … 6L×8 (Table C.1), ≥ 75% (Table 5)"
FIXES = {
    "prune-calibration": "the pruning baselines chose their layers on the held-out batches they "
    "were then scored on, prune-angular by the angular distance averaged over positions; now on "
    "training-data calibration batches, prune-angular at each sequence's last token "
    "(Gromov et al.) — the prune-bi / prune-angular rows and kept layers",
}


def recovered_vs_control(res: Dict[str, Any], label: str) -> List[float]:
    """(merged - healed) / (merged - control) per seed: the gap to the source trained as long."""
    ctrl = {c["seed"]: c["loss"] for c in res["control"]}
    out = []
    for a in res["arms"]:
        ref = ctrl.get(a["seed"])
        if a["label"] == label and ref is not None and a["merged"] is not None:
            gap = a["merged"] - ref
            out.append((a["merged"] - a["healed"]) / gap if gap > 0 else math.nan)
    return out


def layouts(ctx: Context, depth: int) -> List[Tuple[int, int]]:
    """(unique layers, loops) of the budget for a ``depth``-layer source (too small ones skipped:
    a looped core needs a prelude and a coda layer besides it)."""
    out = []
    for div, loops in ctx.budget.layouts:
        n = max(depth // div, 1)
        if n < depth and (loops == 1 or n >= 3) and (n, loops) not in out:
            out.append((n, loops))
    if not out:
        raise ValueError(f"the source has {depth} layers: too shallow to compress (need >= 4)")
    return out


def distill_plan(plan: List[Tuple[int, int]]) -> List[Tuple[str, int, int]]:
    """(method, unique layers, loops) of the distillation arms: prune-bi and average at the first
    layout, prune-loop at the looped layout with the fewest unique layers and most loops (6L×8
    at the cpu budget; none when the budget has no looped layout)."""
    first = plan[0]
    arms = [("prune-bi", *first), ("average", *first)]
    looped = [(n, k) for n, k in plan if k > 1]
    if looped:
        arms.append(("prune-loop", *min(looped, key=lambda nk: (nk[0], -nk[1]))))
    return arms


def _quiet(*_):
    return None


def label_of(method: str, n: int, loops: int, heal: str = "sgt") -> str:
    if heal == "distill":
        return f"{n}L×{loops} {method}{DISTILLED}"
    return f"{n}L×{loops}" + ("" if method == "average" else f" {method}")


def run_compress(ctx: Context) -> Dict[str, Any]:
    b = ctx.budget
    seeds = list(range(ctx.cfg.n_seeds))
    source, source_cfg = ctx.load_source()
    plan = layouts(ctx, len(source.layers))
    arms = [("average", n, k) for n, k in plan] + [(m, plan[0][0], 1) for m in PRUNING]
    kd_arms = distill_plan(plan)
    bar = StageBar("compress", len(seeds) * (len(arms) + len(kd_arms) + 1) + 1)
    root = ctx.runs_dir("compress", fresh=True)
    data = Data(ctx.tokenizer, ctx.tokenizer_dir, ctx.train, ctx.valid, b.batch_size, b.seq_len)
    res: Dict[str, Any] = {"depth": len(source.layers), "seeds": seeds, "arms": [], "control": []}
    res["source"] = ctx.evaluate(source)
    src = evaluate(source, data, "source")
    kd_steps = b.pre_unroll_steps + b.heal_steps  # an SGT arm's end-to-end steps
    t0 = time.perf_counter()
    # a row per end-to-end position, at least a local batch and the calibration rows
    cache = ctx.teacher_cache(rows=max(kd_steps * b.batch_size, 2 * b.batch_size, 32))
    res["distill"] = {
        "e2e_steps": kd_steps, "local_steps": ctx.cfg.knobs("compress")["local_steps"],
        "local_batch": 2 * b.batch_size,
        "cache": {"rows": cache.rows, "tokens": cache.tokens, "k": cache.k,
                  "seq_len": cache.seq_len, "seconds": time.perf_counter() - t0},
    }  # fmt: skip
    bar.step("teacher cache")
    for seed in seeds:
        for method, n, loops in arms:
            cfg = CompressConfig.from_flat(
                recipe="paper", to=f"{n}L", loops=loops, method=method,
                pre_unroll_steps=b.pre_unroll_steps, heal_steps=b.heal_steps,
                batch_size=b.batch_size, seq_len=b.seq_len,
                learning_rate=b.learning_rate, seed=seed, eval_batches=-1,
                tokenizer=str(ctx.tokenizer_dir) if ctx.tokenizer_dir else None,
            )  # fmt: skip
            out = root / f"{cfg.label()}-s{seed}"
            r = run_pipeline(source, source_cfg, cfg, data, out, log=lambda *_: None,
                             source_stage=src)  # fmt: skip
            res["arms"].append({
                "method": method, "unique": n, "loops": loops, "seed": seed, "heal": "sgt",
                "label": label_of(method, n, loops),
                "merged": r.stage("merged").loss, "healed": r.stages[-1].loss,
                "recovered": r.recovered, "kept": r.config.get("merge_map"),
                "effective_depth": r.stages[-1].effective_depth, "params": r.stages[-1].params,
                "heal_seconds": sum(s.seconds for s in r.stages
                                    if s.name in ("merged-healed", "healed")),
                "eval": ctx.evaluate(r.model),
            })  # fmt: skip
            bar.step(f"{method} {n}L×{loops} seed {seed}")
        for method, n, loops in kd_arms:
            res["arms"].append(distill_arm(ctx, source, source_cfg, cache, data, src,
                                           (method, n, loops), seed))  # fmt: skip
            bar.step(f"{method}{DISTILLED} {n}L×{loops} seed {seed}")
        cfg = cfg.with_(method="average", loops=1)
        st = control_stage(source, source_cfg, cfg, data, root / f"control-s{seed}", lambda *_: 0)
        res["control"].append({"seed": seed, "loss": st.loss, "params": st.params})
        bar.step(f"control seed {seed}")
    bar.close()
    return res


def distill_arm(ctx: Context, source, source_cfg, cache, data: Data, src, arm, seed: int):
    """One arm healed from the teacher cache: build, block-local steps, end-to-end KL steps."""
    b = ctx.budget
    method, n, loops = arm
    kn = ctx.cfg.knobs("compress")
    steps = b.pre_unroll_steps + b.heal_steps
    mx.random.seed(seed)
    model, _, groups, units, info = build_student(source, source_cfg, cache, n, "uniform", method,
                                               "average", loops)  # fmt: skip
    mx.eval(model.parameters())
    merged = evaluate(model, data, "merged")
    t0 = time.perf_counter()
    fit_local(model.layers, units, cache, kn["local_steps"], batch_size=2 * b.batch_size,
              seed=seed, log=_quiet)  # fmt: skip
    local = evaluate(model, data, "local", seconds=time.perf_counter() - t0)
    t0 = time.perf_counter()
    distill(model, cache, steps, lr=b.learning_rate, batch_size=b.batch_size, seed=seed,
            log=_quiet)  # fmt: skip
    healed = evaluate(model, data, "healed", seconds=time.perf_counter() - t0)
    return {
        "method": method, "unique": n, "loops": loops, "seed": seed, "heal": "distill",
        "label": label_of(method, n, loops, "distill"), "merged": merged.loss,
        "local": local.loss, "healed": healed.loss,
        "recovered": recovered_fraction(src.loss, merged.loss, healed.loss),
        "kept": None if method == "average" else [[k] for k in info["kept"]], "groups": groups,
        "effective_depth": healed.effective_depth, "params": healed.params,
        "local_seconds": local.seconds, "heal_seconds": healed.seconds,
        "eval": ctx.evaluate(model),
    }  # fmt: skip


def _vals(res, label: str, key: str) -> List[float]:
    return [a[key] for a in res["arms"] if a["label"] == label]


def compress_rows(res: Dict[str, Any]) -> List[Dict[str, Any]]:
    rows = []
    ctrl = summary([c["loss"] for c in res["control"]])
    labels = list(dict.fromkeys(a["label"] for a in res["arms"] if _is_paper(a)))
    for label in labels:
        merged, healed = summary(_vals(res, label, "merged")), summary(_vals(res, label, "healed"))
        rows.append(claim_row(
            "Tables 5, C.1", f"{res['depth']}L → {label}: ≥ 75% of the merge gap recovered "
            "(gap to the source trained as long)", PAPER_RECOVERY,
            recovered_vs_control(res, label), threshold=0.75,
            control=f"merged {merged} → healed {healed}; source trained as long {ctrl}; "
            f"against the untrained source ({res['source']['chat']['total']:.3g}): recovered "
            f"{summary(_vals(res, label, 'recovered'))}",
        ))  # fmt: skip
    for label in labels:
        n, loops = label.split("L×")
        flat = f"{n}L×1"
        if int(loops) > 1 and flat in labels:
            rows.append(claim_row(
                "Table C.2", f"looping the healed core helps: {label} < {flat} held-out loss",
                "6L: 4.82 unlooped → 2.93 at ×8 (-39%)", _vals(res, label, "healed"),
                _vals(res, flat, "healed"), greater=False,
            ))  # fmt: skip
    first = labels[0]
    for method in PRUNING:
        other = f"{first} {method}"
        rows.append(claim_row(
            "Table 5 (baseline)", f"averaging heals better than {method} at {first}",
            "not compared", _vals(res, first, "healed"), _vals(res, other, "healed"),
            greater=False, control=f"{method}: merged {summary(_vals(res, other, 'merged'))} → "
            f"healed {summary(_vals(res, other, 'healed'))}, recovered "
            f"{summary(_vals(res, other, 'recovered'))}",
        ))  # fmt: skip
    return rows + distill_rows(res)


def _is_paper(arm: Dict[str, Any]) -> bool:
    """The paper's arm: averaged layers healed with SGT (results before the distillation arms
    have no ``heal`` key: all SGT)."""
    return arm["method"] == "average" and arm.get("heal", "sgt") == "sgt"


def distill_rows(res: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Each distillation arm against the paper's SGT healing at its layout, equal end-to-end
    steps (none for results made before these arms existed)."""
    if "distill" not in res:
        return []
    d, rows = res["distill"], []
    kd = [a for a in res["arms"] if a.get("heal") == "distill"]
    for label in dict.fromkeys(a["label"] for a in kd):
        arm = next(a for a in kd if a["label"] == label)
        paper = label_of("average", arm["unique"], arm["loops"])
        rows.append(claim_row(
            "Table 5 (healing)", f"{label} heals below the paper's SGT healing ({paper}) at "
            f"{d['e2e_steps']} end-to-end steps each", "not compared (SGT healing only)",
            _vals(res, label, "healed"), _vals(res, paper, "healed"), greater=False,
            control=f"{label}: built {summary(_vals(res, label, 'merged'))} → after "
            f"{d['local_steps']} local steps {summary(_vals(res, label, 'local'))} → healed "
            f"{summary(_vals(res, label, 'healed'))}; {paper} (SGT): merged "
            f"{summary(_vals(res, paper, 'merged'))} → healed "
            f"{summary(_vals(res, paper, 'healed'))}",
        ))  # fmt: skip
    return rows


def ppl_table(res: Dict[str, Any]) -> List[Tuple[str, float, float, float]]:
    """(label, chat ppl, en ppl, ko ppl) means over seeds, source and control first."""

    src = res["source"]
    out = [("source", src["chat"]["perplexity"], src.get("en", {}).get("ppl", math.nan),
            src.get("ko", {}).get("ppl", math.nan))]  # fmt: skip
    for label in dict.fromkeys(a["label"] for a in res["arms"]):
        ev = [a["eval"] for a in res["arms"] if a["label"] == label]
        out.append((label, mean([e["chat"]["perplexity"] for e in ev]),
                    mean([e.get("en", {}).get("ppl", math.nan) for e in ev]),
                    mean([e.get("ko", {}).get("ppl", math.nan) for e in ev])))  # fmt: skip
    return out


def compress_section(res: Dict[str, Any]) -> List[str]:
    lines = [
        f"Source depth {res['depth']}, seeds {res['seeds']}; means over seeds.",
        "",
        "| model | merged loss | healed loss | recovered (vs control) | recovered (vs source) "
        "| eff. depth | params | chat ppl | en ppl | ko ppl |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ppl = {label: (c, e, k) for label, c, e, k in ppl_table(res)}
    src = ppl["source"]
    lines.append(f"| source | | {fmt(res['source']['chat']['total'])} | | | {res['depth']} | | "
                 f"{fmt(src[0])} | {fmt(src[1])} | {fmt(src[2])} |")  # fmt: skip
    for label in dict.fromkeys(a["label"] for a in res["arms"]):
        arms = [a for a in res["arms"] if a["label"] == label]
        c, e, k = ppl[label]
        lines.append(
            f"| {label} | {fmt(mean([a['merged'] for a in arms]))} | "
            f"{fmt(mean([a['healed'] for a in arms]))} | "
            f"{fmt(mean(recovered_vs_control(res, label)))} | "
            f"{fmt(mean([a['recovered'] for a in arms]))} | {arms[0]['effective_depth']} | "
            f"{arms[0]['params'] / 1e6:.2f}M | {fmt(c)} | {fmt(e)} | {fmt(k)} |"
        )
    ctrl = mean([c["loss"] for c in res["control"]])
    lines.append(
        f"| source + same SGT steps (control) | | {fmt(ctrl)} | | | {res['depth']} | | | | |"
    )
    kept = {a["label"]: a["kept"] for a in res["arms"] if a["method"] != "average"}
    if kept:
        lines += ["", "Layers kept by pruning (seed 0; chosen on "
                  + ("training-data calibration batches" if "prune-calibration" in
                     (res.get("fixes") or ()) else "the held-out batches, see the header")
                  + "): "
                  + "; ".join(f"{k}: {[g[0] for g in v]}" for k, v in kept.items())]  # fmt: skip
    return lines + distill_section(res)


def distill_section(res: Dict[str, Any]) -> List[str]:
    """Distillation healing beside SGT healing at equal end-to-end steps, with wall times."""
    if "distill" not in res:
        return []
    d, c = res["distill"], res["distill"]["cache"]
    lines = [
        "", f"Healing from the source's teacher cache ({c['rows']} rows of {c['seq_len']} tokens "
        f"of the chat training data, {c['tokens']} supervised; top-{c['k']} logits and every "
        f"layer's residual stream; built once in {c['seconds']:.0f} s): {d['local_steps']} "
        f"block-local steps of {d['local_batch']} rows, then {d['e2e_steps']} end-to-end KL "
        "steps at the SGT arms' batch and learning rate (an SGT arm's pre-unroll + heal "
        "steps). Held-out loss as above; seconds are wall time on a shared machine (noisy).", "",
        "| arm | built | after local | healed | paper's arm (SGT) | its healed | local s | "
        "distill s | SGT s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]  # fmt: skip
    kd = [a for a in res["arms"] if a.get("heal") == "distill"]
    for label in dict.fromkeys(a["label"] for a in kd):
        arms = [a for a in kd if a["label"] == label]
        paper = label_of("average", arms[0]["unique"], arms[0]["loops"])
        sgt = [a for a in res["arms"] if a["label"] == paper]
        lines.append(
            f"| {label} | {fmt(mean(_vals(res, label, 'merged')))} | "
            f"{fmt(mean(_vals(res, label, 'local')))} | {fmt(mean(_vals(res, label, 'healed')))} "
            f"| {paper} | {fmt(mean([a['healed'] for a in sgt]))} | "
            f"{fmt(mean(_vals(res, label, 'local_seconds')))} | "
            f"{fmt(mean(_vals(res, label, 'heal_seconds')))} | "
            f"{fmt(mean([a.get('heal_seconds') for a in sgt]))} |"
        )
    if not any(a["loops"] > 1 for a in kd):
        lines += ["", "prune-loop + local + distill: not run (no looped layout at this budget)"]
    return lines


def plot(res: Dict[str, Any]):
    labels = list(dict.fromkeys(a["label"] for a in res["arms"]))
    vals = [[a["healed"] for a in res["arms"] if a["label"] == lab] for lab in labels]
    return (
        labels + ["control"],
        vals + [[c["loss"] for c in res["control"]]],
        "held-out loss after healing",
    )


STAGE = Stage(
    name="compress",
    order=20,
    title="2. Depth compression (Tables 5, C.1, C.2) and pruning baselines",
    run=run_compress,
    rows=compress_rows,
    section=compress_section,
    plot=plot,
    # block-local healing steps of the distillation arms (before their end-to-end steps)
    knobs={"local_steps": {"tiny": 2, "cpu": 20, "paper": 100}},
    fixes=FIXES,
)
