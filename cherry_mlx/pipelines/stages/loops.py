"""Stage of ``repro``: the loop sweep at one unique depth (Table C.2).

The source is merged to ``loop_unique`` unique layers (the paper's 6) and SGT-healed once per
seed; each loop count then unrolls that same healed model (prelude 1, coda 1, the middle layers
looped k times: 6L×8 is 34 effective layers) and heals it again for the same steps, so the loop
counts differ in nothing but the loop. ×1 is the unlooped control. The paper reports a monotone
gain up to ×8 (-39%) and a slight loss beyond it.
"""

from __future__ import annotations

from typing import Any, Dict, List

from cherry_mlx.compression.config import CompressConfig
from cherry_mlx.compression.heal import Data, evaluate, merge_and_heal, run_pipeline
from cherry_mlx.evaluation.verdict import claim_row, summary
from cherry_mlx.pipelines.context import Context, StageBar
from cherry_mlx.pipelines.report import fmt, mean
from cherry_mlx.pipelines.stage import Stage

LOOPS = (1, 2, 4, 6, 8, 10, 12)
PAPER_LOSS = {1: 4.82, 2: 3.91, 4: 3.28, 6: 3.01, 8: 2.93, 10: 2.95, 12: 3.02}  # 6L, Table C.2


def run_loops(ctx: Context) -> Dict[str, Any]:
    b, kn = ctx.budget, ctx.cfg.knobs("loops")
    seeds = list(range(ctx.cfg.n_seeds))
    source, source_cfg = ctx.load_source()
    depth = len(source.layers)
    unique = min(kn["loop_unique"], depth - 1)
    if unique < 3:
        raise ValueError(f"the source has {depth} layers: a looped core needs >= 3 unique layers "
                         "(prelude, core, coda); use a deeper source")  # fmt: skip
    loops = [k for k in LOOPS if k <= kn["loop_max"]]
    bar = StageBar("loops", len(seeds) * (1 + len(loops)))
    root = ctx.runs_dir("loops", fresh=True)
    data = Data(ctx.tokenizer, ctx.tokenizer_dir, ctx.train, ctx.valid, b.batch_size, b.seq_len)
    src = evaluate(source, data, "source")
    res: Dict[str, Any] = {"depth": depth, "unique": unique, "loops": loops, "seeds": seeds,
                           "source": src.loss, "arms": []}  # fmt: skip
    quiet = lambda *_: None  # noqa: E731
    for seed in seeds:
        base = CompressConfig.from_flat(
            recipe="paper", to=f"{unique}L", loops=1, pre_unroll_steps=b.pre_unroll_steps,
            heal_steps=b.heal_steps, batch_size=b.batch_size, seq_len=b.seq_len,
            learning_rate=b.learning_rate, seed=seed, eval_batches=-1,
            tokenizer=str(ctx.tokenizer_dir) if ctx.tokenizer_dir else None,
        )  # fmt: skip
        state = merge_and_heal(source, source_cfg, base, data, root / f"merged-s{seed}", quiet)
        bar.step(f"merged seed {seed}")
        for k in loops:
            cfg = base.with_(loops=k)
            r = run_pipeline(source, source_cfg, cfg, data, root / f"{cfg.label()}-s{seed}", quiet,
                             source_stage=src, merged_state=state)  # fmt: skip
            names = {s.name: s.loss for s in r.stages}
            res["arms"].append({
                "loops": k, "seed": seed, "effective_depth": r.stages[-1].effective_depth,
                "merged": names.get("merged"), "merged_healed": names.get("merged-healed"),
                "unrolled": names.get("unrolled"), "healed": r.stages[-1].loss,
                "params": r.stages[-1].params,
            })  # fmt: skip
            bar.step(f"×{k} seed {seed}")
    bar.close()
    return res


def _healed(res, k: int) -> List[float]:
    return [a["healed"] for a in res["arms"] if a["loops"] == k]


def _paper(k: int, unique: int) -> str:
    if k not in PAPER_LOSS:
        return "-"
    gain = 1 - PAPER_LOSS[k] / PAPER_LOSS[1]
    return f"6L: {PAPER_LOSS[1]} → {PAPER_LOSS[k]} at ×{k} (-{gain:.1%})"


def loops_rows(res: Dict[str, Any]) -> List[Dict[str, Any]]:
    u, loops = res["unique"], res["loops"]
    rows = []
    for k in loops[1:]:
        depth = next(a["effective_depth"] for a in res["arms"] if a["loops"] == k)
        rows.append(claim_row(
            "Table C.2", f"{u}L×{k} ({depth} effective) < {u}L×1 held-out loss after healing",
            _paper(k, u), _healed(res, k), _healed(res, 1), greater=False,
            control=f"unlooped {u}L×1 {summary(_healed(res, 1))}",
        ))  # fmt: skip
    if 8 in loops and 12 in loops:
        rows.append(claim_row(
            "Table C.2", f"{u}L×12 is no better than {u}L×8 (a sweet spot, not more is better)",
            "2.93 at ×8 vs 3.02 at ×12", _healed(res, 12), _healed(res, 8),
            control=f"×8 {summary(_healed(res, 8))}",
        ))  # fmt: skip
    return rows


def loops_section(res: Dict[str, Any]) -> List[str]:
    lines = [
        f"Source depth {res['depth']} (held-out loss {fmt(res['source'])}) merged to "
        f"{res['unique']} unique layers and healed once per seed {res['seeds']}; every loop count "
        "unrolls that model and heals it for the same steps. Means over seeds.",
        "",
        "| loops | effective depth | unrolled loss | healed loss | paper (6L) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for k in res["loops"]:
        arms = [a for a in res["arms"] if a["loops"] == k]
        lines.append(
            f"| ×{k} | {arms[0]['effective_depth']} | {fmt(mean([a['unrolled'] for a in arms]))} "
            f"| {fmt(mean([a['healed'] for a in arms]))} | {PAPER_LOSS.get(k, '-')} |"
        )
    return lines


def plot(res: Dict[str, Any]):
    return ([f"×{k}" for k in res["loops"]], [_healed(res, k) for k in res["loops"]],
            "held-out loss after healing")  # fmt: skip


STAGE = Stage(
    name="loops",
    order=25,
    title="2b. Loop sweep at one unique depth (Table C.2)",
    run=run_loops,
    rows=loops_rows,
    section=loops_section,
    plot=plot,
    knobs={
        "loop_unique": {"tiny": 4, "cpu": 6, "paper": 6},
        "loop_max": {"tiny": 4, "cpu": 12, "paper": 12},
    },  # fmt: skip
)
