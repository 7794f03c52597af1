"""Stage 5 of ``repro``: MoEE (Table 7). Two compressed experts healed on different task families,
fused top-1 at model level, against single compressed models given the same total steps.

The source is merged to half its depth. Expert A is healed S steps on the knowledge families
(factual, json, multiturn, tools), expert B S steps on the rest (arithmetic, units, Atcha, ...);
the fused model then trains S steps (gate and experts). Against it, with 3S steps each:
the single merged model (same parameters per expert, half the FLOPs per token: model-level MoEE
runs both trunks), and the single merged model looped twice (one expert's parameters, about the
MoEE's FLOPs per token), so neither compute nor steps explain a difference.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List

from cherry_mlx.compression.merge import merge_model, plan_groups
from cherry_mlx.compression.recurrent import unroll
from cherry_mlx.data.encode import encode_dataset
from cherry_mlx.evaluation.verdict import claim_row, summary
from cherry_mlx.fusion.config import FuseConfig
from cherry_mlx.fusion.flops import dense_cost
from cherry_mlx.fusion.run import fuse
from cherry_mlx.models.loading import save_model
from cherry_mlx.pipelines.context import Context, StageBar, family
from cherry_mlx.pipelines.report import fmt, mean
from cherry_mlx.pipelines.stage import Stage

KNOWLEDGE = ("factual", "json", "multiturn", "tools")


def _merged(ctx: Context, loops: int = 1):
    source, cfg = ctx.load_source()
    n = max(len(source.layers) // 2, 1)
    model, mcfg = merge_model(source, cfg, plan_groups(len(source.layers), to=f"{n}L"))
    if loops > 1:  # no prelude/coda: exactly twice the block calls of one expert
        model, mcfg = unroll(model, mcfg, loops, prelude=0, coda=0)
    return model, mcfg


def family_data(ctx: Context):
    """The two experts' training sets: (knowledge families, the rest), encoded."""
    recs = ctx.train_records
    fam_a = [r for r in recs if family(r) in KNOWLEDGE]
    fam_b = [r for r in recs if family(r) not in KNOWLEDGE]
    if not fam_a or not fam_b:
        raise ValueError("MoEE needs both task families in the chat data (ids 'family:...')")
    return tuple(encode_dataset(f, ctx.tokenizer, ctx.budget.seq_len)[0] for f in (fam_a, fam_b))


def train_experts(ctx: Context, stage: str, data, steps: int, seed: int, bar) -> List:
    """Two half-depth merged experts, each healed ``steps`` steps on its family; their paths."""
    paths = []
    for name, enc in zip(("expert_a", "expert_b"), data):
        model, mcfg = _merged(ctx)
        ctx.fit(model, ctx.train_cfg(stage, f"{name}-s{seed}", steps, seed), train_data=enc)
        # the expert beside its training run (runs/NAME/model/, what compress and fuse write)
        out = ctx.runs_dir(stage) / f"{name}-s{seed}" / "model"
        paths.append(save_model(model, out, mcfg, ctx.tokenizer_dir))
        bar.step(f"{name} seed {seed}")
    return paths


def run_moee(ctx: Context) -> Dict[str, Any]:
    b = ctx.budget
    S = b.moee_steps
    seeds = list(range(ctx.cfg.n_seeds))
    bar = StageBar("moee", 5 * len(seeds))
    root = ctx.runs_dir("moee", fresh=True)
    data = family_data(ctx)
    res: Dict[str, Any] = {"steps": S, "seeds": seeds, "moee": [], "single": [], "looped": []}
    for seed in seeds:
        paths = train_experts(ctx, "moee", data, S, seed, bar)
        fcfg = FuseConfig.from_flat(
            experts=[str(p) for p in paths], granularity="model", top_k=1, train_experts=True,
            steps=S, batch_size=b.batch_size, seq_len=b.seq_len, learning_rate=b.learning_rate,
            runs_dir=str(root), name=f"fused-s{seed}", seed=seed, balance=0.01,
            tokenizer=str(ctx.tokenizer_dir) if ctx.tokenizer_dir else None,
        )  # fmt: skip
        rep, fused = fuse(fcfg, ctx.train, ctx.valid, ctx.tokenizer, compare=False)
        res["moee"].append({"seed": seed, "eval": ctx.evaluate(fused), "cost": rep["cost"],
                            "routing_entropy": (rep.get("routing") or {}).get(
                                "routing_entropy")})  # fmt: skip
        bar.step(f"fused seed {seed}")
        for key, loops in (("single", 1), ("looped", 2)):
            model, mcfg = _merged(ctx, loops)
            ctx.fit(model, ctx.train_cfg("moee", f"{key}-s{seed}", 3 * S, seed))
            res[key].append({"seed": seed, "eval": ctx.evaluate(model),
                             "cost": dense_cost(mcfg, b.seq_len)})  # fmt: skip
            bar.step(f"{key} seed {seed}")
    bar.close()
    return res


def _tot(rows) -> List[float]:
    return [r["eval"]["chat"]["total"] for r in rows]


def moee_rows(res: Dict[str, Any]) -> List[Dict[str, Any]]:
    mo = res["moee"][0]["cost"] if res["moee"] else {}
    out = []
    for key, what in (("single", "single merged model"), ("looped", "single merged model ×2")):
        c = res[key][0]["cost"] if res[key] else {}
        out.append(claim_row(
            "Table 7", f"MoEE (2 experts, top-1) < {what} at matched total steps",
            "2.789 vs 2.926 (-4.7%)", _tot(res["moee"]), _tot(res[key]), greater=False,
            control=f"{what} {summary(_tot(res[key]))}; FLOPs/token MoEE "
            f"{mo.get('flops_per_token', 0) / 1e6:.2f}M vs {c.get('flops_per_token', 0) / 1e6:.2f}M"
            f"; active params {mo.get('active_params', 0) / 1e6:.2f}M vs "
            f"{c.get('active_params', 0) / 1e6:.2f}M",
        ))  # fmt: skip
    return out


def moee_section(res: Dict[str, Any]) -> List[str]:
    lines = [
        f"S = {res['steps']}: experts S steps each + S fused steps; singles 3S steps.",
        "",
        "| model | chat loss | en ppl | ko ppl | FLOPs/token | active params |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, label in (("moee", "MoEE top-1"), ("single", "single merged"),
                       ("looped", "single merged ×2")):  # fmt: skip
        rows = res[key]
        if not rows:
            continue
        cost = rows[0]["cost"]
        lines.append(
            f"| {label} | {fmt(mean([r['eval']['chat']['total'] for r in rows]))} | "
            f"{fmt(mean([r['eval'].get('en', {}).get('ppl', math.nan) for r in rows]))} | "
            f"{fmt(mean([r['eval'].get('ko', {}).get('ppl', math.nan) for r in rows]))} | "
            f"{cost['flops_per_token'] / 1e6:.2f}M | {cost['active_params'] / 1e6:.2f}M |"
        )
    return lines


def plot(res: Dict[str, Any]):
    vals = [[r["eval"]["chat"]["total"] for r in res[k]] for k in ("moee", "single", "looped")]
    return ["MoEE", "single", "single ×2"], vals, "held-out chat loss"


STAGE = Stage(
    name="moee",
    order=50,
    title="5. MoEE (Table 7)",
    run=run_moee,
    rows=moee_rows,
    section=moee_section,
    plot=plot,
)
