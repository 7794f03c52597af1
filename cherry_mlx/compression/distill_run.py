"""``compress --heal-with distill``: heal from the source model's own signal.

merge (or prune) -> unroll -> block-local healing on cached hidden states -> end-to-end KL to
the cached top-k logits. The teacher cache (``cherry-mlx teacher build``) is built once into
``OUT/teacher-cache`` unless ``--teacher-cache`` names one; a cache of another model is refused.
Local healing replaces the paper's "heal before unrolling" stage: every loop iteration is
trained against the source layers it stands for, so the looped core never sees the incoherent
merged representation the paper warns about. Held-out losses (the data's valid split) bracket
each stage, in the same report as the SGT path.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import mlx.core as mx

from cherry_mlx.compression.config import CompressConfig
from cherry_mlx.compression.distill_heal import distill
from cherry_mlx.compression.heal import (
    CompressResult,
    Data,
    evaluate,
    gap_text,
    recovered_fraction,
    recurrence_of,
)
from cherry_mlx.compression.local_heal import fit_local
from cherry_mlx.compression.merge import plan_groups
from cherry_mlx.compression.report import write_report
from cherry_mlx.compression.student import build_student
from cherry_mlx.data.teacher_cache import TeacherCache, model_fingerprint
from cherry_mlx.models.loading import load_model, resolve, save_model
from cherry_mlx.models.outputs import check_output
from cherry_mlx.models.runs import RUNS_DIR, latest_run, source_name
from cherry_mlx.training.teacher import build_cache
from cherry_mlx.training.teacher_config import TeacherConfig


def teacher_cache_for(cfg: CompressConfig, model_dir: Path, out_dir: Path, depth: int, log=print):
    """The cache named by ``--teacher-cache`` (checked against the source), or one built now."""
    fp = model_fingerprint(model_dir)
    path = Path(cfg.teacher_cache) if cfg.teacher_cache else out_dir / "teacher-cache"
    if not cfg.teacher_cache:
        log(f"building the teacher cache in {path} (once; resumable)")
        build_cache(TeacherConfig(model=str(model_dir), out=str(path), seq_len=cfg.seq_len,
                                  hidden_layers="all"), log=log)  # fmt: skip
    return TeacherCache.open(path, fingerprint=fp, need_hidden=range(depth + 1),
                             purpose="compression healing")  # fmt: skip


def compress_distill(cfg: CompressConfig, log=print, data=None) -> CompressResult:
    model_name = cfg.model or latest_run(require_model=True)
    if model_name is None:
        raise FileNotFoundError("no model given and no runs/ yet: pass MODEL or train first")
    model_dir = resolve(model_name)
    source, source_cfg = load_model(model_dir)
    out_dir = Path(cfg.out) if cfg.out else RUNS_DIR / f"{source_name(model_dir)}-{cfg.label()}"
    check_output(out_dir, [model_dir], cfg.force, "--out")
    n = len(source.layers)
    target = len(plan_groups(n, cfg.to, cfg.factor, cfg.groups))
    if cfg.loops > 1:
        recurrence_of(cfg, target)  # a bad layout fails before any data or cache is read
    data = data or Data.load(cfg, model_dir, source_cfg.get("vocab_size", 0))
    cache = teacher_cache_for(cfg, model_dir, out_dir, n, log)
    res = CompressResult(out_dir=out_dir)
    res.stages.append(evaluate(source, data, "source", cfg.eval_batches))
    log(f"source: {n} layers, loss {res.stages[0].loss:.4f}")
    t0 = time.perf_counter()
    model, mcfg, groups, units, info = build_student(
        source, source_cfg, cache, target, cfg.grouping, cfg.method, cfg.init, cfg.loops,
        cfg.prelude, cfg.coda,
    )  # fmt: skip
    mx.eval(model.parameters())
    res.stages.append(evaluate(model, data, "merged", cfg.eval_batches, time.perf_counter() - t0))
    log(f"{cfg.method} ({cfg.grouping}) {n} -> {len(groups)} layers {groups}: "
        f"loss {res.stages[-1].loss:.4f}")  # fmt: skip
    if cfg.heal and cfg.local_steps:
        t0 = time.perf_counter()
        fit_local(model.layers, units, cache, cfg.local_steps, batch_size=2 * cfg.batch_size,
                  seed=cfg.seed, log=log, masks=model.model.layer_masks)  # fmt: skip
        res.stages.append(evaluate(model, data, "merged-healed", cfg.eval_batches,
                                   time.perf_counter() - t0))  # fmt: skip
        log(f"after {cfg.local_steps} local steps: loss {res.stages[-1].loss:.4f}")
    if cfg.heal and cfg.heal_steps:
        t0 = time.perf_counter()
        distill(model, cache, cfg.heal_steps, lr=cfg.distill_lr, batch_size=cfg.batch_size,
                temperature=cfg.temperature, seed=cfg.seed, log=log)  # fmt: skip
        res.stages.append(evaluate(model, data, "healed", cfg.eval_batches,
                                   time.perf_counter() - t0))  # fmt: skip
        log(f"after {cfg.heal_steps} distillation steps: loss {res.stages[-1].loss:.4f}")
    res.model, res.config = model, dict(mcfg)
    src, merged = res.stage("source").loss, res.stage("merged").loss
    if cfg.heal and len(res.stages) > 2:
        res.recovered = recovered_fraction(src, merged, res.stages[-1].loss)
    save_model(model, out_dir / "model", res.config, data.tokenizer_dir)
    write_report(res, cfg, out_dir)
    (out_dir / "compress_config.json").write_text(
        json.dumps(asdict(cfg), indent=2, ensure_ascii=False) + "\n"
    )
    gap = gap_text(src, merged, res.recovered, cfg.heal)
    log(f"recovered fraction of the merge gap: {gap}; model in {out_dir / 'model'}")
    return res
