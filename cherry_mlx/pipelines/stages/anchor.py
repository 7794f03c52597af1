"""Stage of ``repro``: the mixing-coefficient sweep and pure-GT collapse (Table B.1, Observation 6).

SGT's loss is λ·L_GT + (1 - λ)·L_full; λ = 1 drops the full-sequence anchor and supervises GT
tokens alone. The paper finds that pure-GT training collapses at 0.5B (non-GT loss rises) and
degrades at 1.0B and 1.2B (non-GT improves far less than with the anchor). Every λ trains from the
same source, data order, steps and seeds; held-out GT and non-GT loss changes are measured
against the source (ΔL > 0: the loss fell).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List

from cherry_mlx.evaluation.verdict import claim_row, summary
from cherry_mlx.evaluation.wave import wave_factor
from cherry_mlx.pipelines.context import Context, StageBar, as_split
from cherry_mlx.pipelines.report import fmt, mean
from cherry_mlx.pipelines.stage import Stage

LAMBDAS = (0.0, 0.5, 0.7, 0.9, 1.0)
ANCHORED = 0.7  # the paper's default λ, the comparison for λ = 1


def run_anchor(ctx: Context) -> Dict[str, Any]:
    b = ctx.budget
    seeds = list(range(ctx.cfg.n_seeds))
    bar = StageBar("anchor", len(seeds) * len(LAMBDAS))
    ctx.runs_dir("anchor", fresh=True)
    source, _ = ctx.load_source()
    res: Dict[str, Any] = {"steps": b.steps, "seeds": seeds, "lambdas": list(LAMBDAS),
                           "baseline": ctx.evaluate(source)["chat"], "arms": []}  # fmt: skip
    base = as_split(res["baseline"])
    for seed in seeds:
        for lam in LAMBDAS:
            model, _ = ctx.load_source()
            cfg = ctx.train_cfg("anchor", f"lam{lam:g}-s{seed}", b.steps, seed, select="gt",
                                lam=lam)  # fmt: skip
            ctx.fit(model, cfg)
            now = as_split(ctx.evaluate(model)["chat"])
            res["arms"].append({
                "lam": lam, "seed": seed, "total": now.total, "gt": now.gt, "non_gt": now.non_gt,
                "d_gt": base.gt - now.gt, "d_non_gt": base.non_gt - now.non_gt,
                "W": wave_factor(base, now),
            })  # fmt: skip
            bar.step(f"λ {lam:g} seed {seed}")
    bar.close()
    return res


def _col(res, lam: float, key: str) -> List[float]:
    return [a[key] for a in res["arms"] if math.isclose(a["lam"], lam)]


def anchor_rows(res: Dict[str, Any]) -> List[Dict[str, Any]]:
    pure, anchored = _col(res, 1.0, "d_non_gt"), _col(res, ANCHORED, "d_non_gt")
    return [
        claim_row("Table B.1", f"pure GT (λ 1) improves held-out non-GT loss less than λ "
                  f"{ANCHORED} (ΔL_nonGT)", "0.5B -1.56 vs +1.59; 1.0B +0.88 vs +12.94; "
                  "1.2B +0.49 vs +4.46", pure, anchored, greater=False,
                  control=f"λ {ANCHORED}: ΔL_nonGT {summary(anchored)}"),
        claim_row("Observation 6", "pure GT (λ 1) collapses: held-out non-GT loss rises "
                  "(ΔL_nonGT < 0)", "0.5B: collapses; 1.0B, 1.2B: degrade (ΔL_nonGT > 0)",
                  pure, threshold=0.0, greater=False,
                  control=f"λ 1 ΔL_GT {summary(_col(res, 1.0, 'd_gt'))}"),
    ]  # fmt: skip


def anchor_section(res: Dict[str, Any]) -> List[str]:
    base = res["baseline"]
    lines = [
        f"{res['steps']} steps per λ, seeds {res['seeds']}; held-out chat loss (response "
        f"tokens). Source: total {fmt(base['total'])}, GT {fmt(base['gt'])}, non-GT "
        f"{fmt(base['non_gt'])}. ΔL = source - trained (positive: the loss fell); means over "
        "seeds.",
        "",
        "| λ | total | GT | non-GT | ΔL_GT | ΔL_nonGT | W |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for lam in res["lambdas"]:
        c = {k: fmt(mean(_col(res, lam, k))) for k in
             ("total", "gt", "non_gt", "d_gt", "d_non_gt", "W")}  # fmt: skip
        lines.append(f"| {lam:g} | {c['total']} | {c['gt']} | {c['non_gt']} | {c['d_gt']} | "
                     f"{c['d_non_gt']} | {c['W']} |")  # fmt: skip
    return lines


def plot(res: Dict[str, Any]):
    lams = res["lambdas"]
    return [f"λ {lam:g}" for lam in lams], [_col(res, lam, "d_non_gt") for lam in lams], \
        "held-out ΔL_nonGT (source - trained)"  # fmt: skip


STAGE = Stage(
    name="anchor",
    order=15,
    title="1b. Mixing coefficient and pure-GT collapse (Table B.1, Observation 6)",
    run=run_anchor,
    rows=anchor_rows,
    section=anchor_section,
    plot=plot,
)
