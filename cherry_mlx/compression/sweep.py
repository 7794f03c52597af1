"""``compress --sweep``: (unique layers x loops) grid like the paper's Tables 5 and C.2.

Every unique depth is merged and healed once (stage 1); each loop count then unrolls that same
healed model and heals it again (stage 2), so a loop-count sweep for one depth costs one stage 1.
The default depths are every proper divisor of N that still leaves a core after the prelude and
coda (48 layers, P1 Q1: 24, 16, 12, 8, 6, 4, 3, covering the paper's 24L..6L). Explicit depths that
do not divide N are merged in balanced groups; ones where prelude + coda leave no core fall back
to P = Q = 0 (all layers looped).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from cherry_mlx.compression.heal import (
    CompressConfig,
    Data,
    control_stage,
    evaluate,
    merge_and_heal,
    recurrence_of,
    run_pipeline,
    source_name,
)
from cherry_mlx.compression.merge import describe_groups, parse_depth, plan_groups
from cherry_mlx.compression.report import plot_sweep, sweep_table
from cherry_mlx.models.loading import load_model, resolve
from cherry_mlx.models.outputs import check_output
from cherry_mlx.models.runs import RUNS_DIR, latest_run


def parse_list(text: Optional[str], what: str, depth: bool = False) -> Optional[List[int]]:
    if text is None:
        return None
    try:
        vals = [
            parse_depth(t, what) if depth else int(t) for t in str(text).split(",") if t.strip()
        ]
    except ValueError:
        raise ValueError(f"{what} {text!r}: write a comma list like 4,2 (or 4L,2L)") from None
    if not vals or min(vals) < 1:
        raise ValueError(f"{what} {text!r}: needs positive integers, e.g. 4,2")
    return vals


def default_grid(n_layers: int, prelude: int = 1, coda: int = 1) -> List[int]:
    """Unique depths to try: the proper divisors of N, largest first, down to the smallest one that
    leaves a core of at least one layer after ``prelude`` and ``coda``."""
    return [d for d in range(n_layers - 1, 0, -1) if n_layers % d == 0 and d - prelude - coda >= 1]


def sweep(
    cfg: CompressConfig,
    uniques: Optional[Sequence[int]] = None,
    loops: Sequence[int] = (1, 2, 4),
    log=print,
    data: Optional[Data] = None,
) -> Dict:
    """Run the grid and write ``sweep.md``, ``sweep.json`` and ``sweep.png`` to the output dir."""

    model_name = cfg.model or latest_run(require_model=True)
    if model_name is None:
        raise FileNotFoundError("no model given and no runs/ yet: pass MODEL or train first")
    model_dir = resolve(model_name)
    source, source_cfg = load_model(model_dir)
    n = len(source.layers)
    if cfg.layout is not None:
        raise ValueError(
            "--layout fixes one depth; a sweep takes --prelude/--coda (or --sweep-to one depth)"
        )
    uniques = list(uniques or default_grid(n, cfg.prelude, cfg.coda))
    bad = [u for u in uniques if u >= n]
    if bad:
        raise ValueError(f"--sweep-to {bad}: each must be fewer than the model's {n} layers")
    out_dir = Path(cfg.out) if cfg.out else RUNS_DIR / f"{source_name(model_dir)}-sweep"
    check_output(out_dir, [model_dir], cfg.force, "--out")
    data = data or Data.load(cfg, model_dir, source_cfg.get("vocab_size", 0))
    src = evaluate(source, data, "source", cfg.eval_batches)
    source_row = {"unique": n, "effective_depth": n, "params": src.params, "loss": src.loss}
    control = None
    if cfg.control and cfg.heal:  # one control serves every row: same total steps everywhere
        control = control_stage(source, source_cfg, cfg, data, out_dir, log)
        source_row["loss_control"] = control.loss
        source_row["control_steps"] = cfg.pre_unroll_steps + cfg.heal_steps
    log(f"source {n}L: loss {src.loss:.4f}")
    rows: List[Dict] = []
    for u in uniques:
        base = replace(cfg, to=f"{u}L", factor=None, groups=None)
        if n % u:
            log(describe_groups(plan_groups(n, to=u)))
        t0 = time.perf_counter()
        state = merge_and_heal(source, source_cfg, base, data, out_dir / f"{u}L", log)
        stage1 = time.perf_counter() - t0
        for n_loops in loops:
            p, q = (cfg.prelude, cfg.coda) if u - cfg.prelude - cfg.coda >= 1 else (0, 0)
            rec = recurrence_of(replace(base, loops=n_loops, prelude=p, coda=q), u)
            p, q = rec.prelude, rec.coda  # P0 Q0 without looping
            run_cfg = replace(base, loops=n_loops, prelude=p, coda=q)
            t1 = time.perf_counter()
            res = run_pipeline(
                source,
                source_cfg,
                run_cfg,
                data,
                out_dir / f"{u}Lx{n_loops}",
                log,
                source_stage=src,
                control=control,
                merged_state=state,
            )
            names = {s.name: s for s in res.stages}
            final = res.stages[-1]
            rows.append(
                {
                    "config": f"{u}Lx{n_loops}"
                    + (f" P{p}Q{q}" if n_loops > 1 and (p, q) != (1, 1) else ""),
                    "unique": u,
                    "loops": n_loops,
                    "prelude": p,
                    "coda": q,
                    "effective_depth": final.effective_depth,
                    "params": final.params,
                    "loss_merged": names["merged"].loss,
                    "loss_merged_healed": getattr(names.get("merged-healed"), "loss", float("nan")),
                    "loss_unrolled": getattr(names.get("unrolled"), "loss", float("nan")),
                    "loss_healed": final.loss,
                    "recovered": res.recovered,
                    "seconds": stage1 + time.perf_counter() - t1,
                }
            )
            log(
                f"{rows[-1]['config']}: healed loss {final.loss:.4f}, recovered {res.recovered:.1%}"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    table = sweep_table(rows, source_row)
    (out_dir / "sweep.md").write_text(
        f"# depth compression sweep of {model_dir}\n\nstage-1 steps {cfg.pre_unroll_steps}, "
        f"stage-2 steps {cfg.heal_steps}; wall s includes the shared stage 1\n\n{table}\n"
    )
    (out_dir / "sweep.json").write_text(
        json.dumps({"source": source_row, "rows": rows}, indent=2) + "\n"
    )
    plot_sweep(rows, source_row, out_dir / "sweep.png")
    log(table)
    return {"source": source_row, "rows": rows, "out_dir": str(out_dir)}
