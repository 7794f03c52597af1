"""Stage of ``repro``: the MoEE ablation ladder (Table 7), by ``cherry-mlx fuse --ablate``.

Per seed, the MoEE stage's two experts (the source merged to half depth, healed on the knowledge
and on the other task families, ``moee.train_experts``) are fused top-1 at model level four
times, each rung adding one component with the same data, steps and seed
(``fusion/run.ablate``): experts alone (plain cross-entropy, no heads, no balancing), + SGT,
+ MTP heads, + load balancing. Each rung is compared with the one below it on held-out chat
loss; the paper's ladder is 3.15 → 2.97 → 2.87 → 2.789.
"""

from __future__ import annotations

from typing import Any, Dict, List

from cherry_mlx.evaluation.verdict import claim_row, summary
from cherry_mlx.fusion.config import FuseConfig
from cherry_mlx.fusion.run import LADDER, ablate
from cherry_mlx.pipelines.context import Context, StageBar
from cherry_mlx.pipelines.report import fmt, mean
from cherry_mlx.pipelines.stage import Stage
from cherry_mlx.pipelines.stages.moee import family_data, train_experts

PAPER = (3.15, 2.97, 2.87, 2.789)  # Table 7, eval loss per rung (2 × 12L experts, 1B)


def run_ablate(ctx: Context) -> Dict[str, Any]:
    b, kn = ctx.budget, ctx.cfg.knobs("ablate")
    seeds = list(range(ctx.cfg.n_seeds))
    bar = StageBar("ablate", 3 * len(seeds))
    root = ctx.runs_dir("ablate", fresh=True)
    data = family_data(ctx)
    res: Dict[str, Any] = {"steps": kn["ablate_steps"], "seeds": seeds,
                           "rungs": [label for label, _ in LADDER], "ladders": [],
                           "eval_examples": min(len(ctx.valid), kn["ablate_eval_batches"] *
                                                b.batch_size)}  # fmt: skip
    for seed in seeds:
        paths = train_experts(ctx, "ablate", data, kn["ablate_steps"], seed, bar)
        fcfg = FuseConfig.from_flat(
            experts=[str(p) for p in paths], granularity="model", top_k=1, train_experts=True,
            steps=kn["ablate_steps"], batch_size=b.batch_size, seq_len=b.seq_len,
            learning_rate=b.learning_rate, mtp_heads=b.mtp_heads, balance=0.01, seed=seed,
            out=str(root / f"ladder-s{seed}"),
            tokenizer=str(ctx.tokenizer_dir) if ctx.tokenizer_dir else None,
        )  # fmt: skip
        # the held-out chat cut, its first ablate_eval_batches batches (every rung the same)
        valid = ctx.valid[: kn["ablate_eval_batches"] * b.batch_size]
        rep = ablate(fcfg, ctx.train, valid, ctx.tokenizer)
        res["ladders"].append({"seed": seed, "rows": rep["rows"]})
        bar.step(f"ladder seed {seed}")
    bar.close()
    return res


def _rung(res, i: int, key: str = "eval_total") -> List[float]:
    return [lad["rows"][i][key] for lad in res["ladders"]]


def ablate_rows(res: Dict[str, Any]) -> List[Dict[str, Any]]:
    rungs = res["rungs"]
    rows = []
    for i in range(1, len(rungs)):
        rows.append(claim_row(
            "Table 7", f"MoEE ladder: '{rungs[i]}' lowers held-out loss vs '{rungs[i - 1]}'",
            f"{PAPER[i - 1]} → {PAPER[i]} (Δ {PAPER[i - 1] - PAPER[i]:.2f})", _rung(res, i),
            _rung(res, i - 1), greater=False,
            control=f"'{rungs[i - 1]}' {summary(_rung(res, i - 1))}",
        ))  # fmt: skip
    last = len(rungs) - 1
    rows.append(claim_row(
        "Table 7", f"MoEE ladder: all components ('{rungs[last]}') < experts alone",
        f"{PAPER[0]} → {PAPER[last]} (-{1 - PAPER[last] / PAPER[0]:.1%})", _rung(res, last),
        _rung(res, 0), greater=False, control=f"'{rungs[0]}' {summary(_rung(res, 0))}",
    ))  # fmt: skip
    return rows


def ablate_section(res: Dict[str, Any]) -> List[str]:
    lines = [
        f"Per seed ({res['seeds']}): two half-depth experts healed {res['steps']} steps each, "
        f"then every rung fused and trained {res['steps']} steps (gate, heads and experts) from "
        "those same experts. Held-out chat loss on the first "
        f"{res.get('eval_examples', '?')} held-out chat examples, means over seeds.",
        "",
        "| rung | total | GT | non-GT | routing entropy | FLOPs/token | paper |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, rung in enumerate(res["rungs"]):
        flops = mean(_rung(res, i, "flops_per_token"))
        lines.append(
            f"| {rung} | {fmt(mean(_rung(res, i)))} | {fmt(mean(_rung(res, i, 'eval_gt')))} | "
            f"{fmt(mean(_rung(res, i, 'eval_non_gt')))} | "
            f"{fmt(mean(_rung(res, i, 'routing_entropy')))} | {flops / 1e6:.2f}M | {PAPER[i]} |"
        )
    return lines


def plot(res: Dict[str, Any]):
    return list(res["rungs"]), [_rung(res, i) for i in range(len(res["rungs"]))], \
        "held-out chat loss"  # fmt: skip


STAGE = Stage(
    name="ablate",
    order=55,
    title="5b. MoEE ablation ladder (Table 7)",
    run=run_ablate,
    rows=ablate_rows,
    section=ablate_section,
    plot=plot,
    knobs={
        "ablate_steps": {"tiny": 2, "cpu": 4, "paper": 500},
        "ablate_eval_batches": {"tiny": 1, "cpu": 4, "paper": 1000},  # held-out batches per rung
    },  # fmt: skip
)
