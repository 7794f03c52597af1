"""The SGT training loop: ``train(cfg, ...)`` -> ``TrainResult``.

One loop serves every phase: SGT fine-tuning and from-scratch training here, and colleagues'
healing (compression), MTP-head training and MoEE gate training, who pass their own ``model`` and
``loss_fn(model, batch) -> (loss, ntoks)``. Per micro-batch: prepare the batch on the host (pad,
positions), one compiled step, one ``mx.eval``. Host reads (``.item()``) happen only on reporting,
eval and checkpoint steps. All randomness is derived from (seed, step), so a resumed run replays an
uninterrupted one exactly.
"""

from __future__ import annotations

import json
import sys
import time
import types
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import mlx.core as mx
from mlx.utils import tree_unflatten

from cherry_mlx.models.loading import save_model
from cherry_mlx.models.runs import BEST, list_checkpoints, open_run, step_dir
from cherry_mlx.training import checkpoint as ckpt
from cherry_mlx.training.config import TrainConfig
from cherry_mlx.training.data import (
    next_batch,
    prepare_batch,
    shuffled_examples,
    train_iterator,
    valid_batches,
    warn_without_gt,
)
from cherry_mlx.training.distributed import (
    Watchdog,
    barrier,
    broadcast_text,
    check_batch_size,
    current_ranks,
    global_counts,
    rank_key,
    shard_iterator,
)
from cherry_mlx.training.evaluate import loss_breakdown
from cherry_mlx.training.objective import make_objective, with_extras
from cherry_mlx.training.report import (
    MetricsLog,
    Progress,
    peak_memory,
    plot_curves,
    read_jsonl_rows,
)
from cherry_mlx.training.setup import keep_tokenizer_copy, setup_model, setup_run
from cherry_mlx.training.step import make_optimizer, make_step


class TrainingDiverged(ValueError):
    """The loss became NaN/inf; the last good checkpoint is left untouched."""


class TrainCallback:
    """Hooks (all optional): subclass and override what you need."""

    def on_step(self, step: int, metrics: Dict[str, Any]) -> None: ...

    def on_eval(self, step: int, metrics: Dict[str, Any]) -> None: ...

    def on_checkpoint(self, step: int, path: Path) -> None: ...

    def on_train_end(self, result: "TrainResult") -> None: ...


@dataclass
class TrainResult:
    run_dir: Path
    history: List[Dict[str, Any]] = field(default_factory=list)  # metrics.jsonl rows
    evals: List[Dict[str, Any]] = field(default_factory=list)  # evals.jsonl rows
    best: Optional[Dict[str, Any]] = None  # the best eval row
    best_dir: Optional[Path] = None
    last_checkpoint: Optional[Path] = None
    step: int = 0
    stopped_early: bool = False
    demo: Optional[Dict[str, Any]] = None  # filled by a demo callback (evaluation.demo)
    model: Any = None
    tokenizer: Any = None
    examples: Optional[Dict[str, Any]] = None  # raw {"train", "test"} records, when read here
    valid_batches: List[dict] = field(default_factory=list)
    config: Optional[TrainConfig] = None  # the settings the run used (name, best metric)


def _call(callbacks, name, *args):
    for cb in callbacks:
        fn = getattr(cb, name, None)
        if fn is not None:
            fn(*args)


def train(
    cfg: TrainConfig,
    model=None,
    tokenizer=None,
    loss_fn=None,
    train_data=None,
    valid_data=None,
    callbacks: Sequence[TrainCallback] = (),
    reference=None,
) -> TrainResult:
    """Train ``model`` (default: built from ``cfg``) and return the run's result.

    ``train_data``: encoded examples (``cherry_mlx.data.encode.Encoded``) or an endless iterator of
    batch dicts (with ``state_dict``/``load_state_dict`` for exact resume); default: the data in
    ``cfg.data``, encoded with ``tokenizer``. ``valid_data``: encoded examples or a list of batches.
    ``loss_fn``: default ``make_objective(cfg)`` (selection, λ, level, categories, MTP).
    ``reference``: a preloaded Rho-1 reference model. ``cfg`` is never changed: the settings the
    run actually used (its name, the best/ metric) are saved as ``train_config.json``.
    """
    cfg.validate()
    dist = current_ranks()  # under mlx.launch: rank 0 writes the run, every rank computes
    check_batch_size(cfg.batch_size, dist)
    run_dir, resume_from = setup_run(cfg)
    if dist.size > 1:  # one run name for all ranks (a new run's default name is the time)
        run_dir = run_dir.parent / broadcast_text(run_dir.name, dist)
    cfg = replace(cfg, name=run_dir.name)
    if cfg.mtp and cfg.best_metric == "total":  # heads do not move the trunk's loss: use both
        cfg = replace(cfg, best_metric="loss")
    mx.random.seed(cfg.seed)
    s = setup_model(cfg, model, tokenizer, train_data, valid_data, resume_from, reference)
    model = s.model
    if loss_fn is None:
        loss_fn = make_objective(cfg, s.reference)
    eval_loss = with_extras(loss_fn)
    hint = f"; continue with: cherry-mlx train --resume {run_dir} (any number of ranks)"
    watchdog = Watchdog(dist, cfg.collective_timeout, hint)
    with watchdog.waiting("start: the other ranks loading the model and data"):
        barrier(dist)  # every rank has checked the run before rank 0 takes it
    args = (cfg, run_dir, resume_from, s, loss_fn, eval_loss, callbacks, dist, watchdog)
    if not dist.main:  # only rank 0 writes (and locks) the run directory
        return _train_locked(*args)
    # created and locked only now, once model and data are ready; removed on a failure before
    # its first checkpoint; a second trainer of the same run fails naming this process
    with open_run(run_dir, notice=lambda m: print(m, file=sys.stderr)):
        return _train_locked(*args)


def _train_locked(
    cfg, run_dir, resume_from, s, loss_fn, eval_loss, callbacks, dist, watchdog
) -> TrainResult:
    """The loop proper, over a run directory rank 0 holds (``train`` set it all up)."""
    model = s.model
    if dist.main:
        s.tokenizer_dir = keep_tokenizer_copy(s.tokenizer_dir, run_dir)
        if resume_from is None:
            cfg.save(run_dir / "train_config.json")
    warn_without_gt(cfg.select, s.train_data)
    if cfg.shuffle_responses:  # Corollary 5's control, on the training side
        s.train_data = shuffled_examples(s.train_data, cfg.seed)
    train_it = train_iterator(s.train_data, cfg.batch_size, cfg.seq_len, cfg.seed)
    train_it = shard_iterator(train_it, dist)  # this rank's rows of every global batch
    val = valid_batches(s.valid_data, cfg.batch_size, cfg.seq_len)

    optimizer = make_optimizer(cfg)
    start, best, evals = 0, None, []
    metrics = MetricsLog(run_dir, write=dist.main)
    if resume_from is not None:
        state = ckpt.load_trainer_state(resume_from)
        start, best = state["step"], state.get("best")
        ckpt.load_optimizer_state(
            optimizer, resume_from / "optimizer.safetensors", model.trainable_parameters()
        )
        if state.get("data") is not None and hasattr(train_it, "load_state_dict"):
            train_it.load_state_dict(state["data"])
        metrics.truncate_after(start)
        evals = [e for e in read_jsonl_rows(run_dir / "evals.jsonl") if e["step"] <= start]
        if dist.main:  # only now that the run's state fits these settings: a refused resume
            cfg.save(run_dir / "train_config.json")  # leaves the run resumable as it was
            (run_dir / "evals.jsonl").write_text("".join(_dumps(e) + "\n" for e in evals))
    elif dist.main:
        for name in ("metrics.jsonl", "evals.jsonl"):
            (run_dir / name).unlink(missing_ok=True)

    step_fn, state = make_step(model, optimizer, loss_fn, cfg.grad_clip, group=dist.group)
    extras = getattr(loss_fn, "extras", None)
    model.train()
    progress = Progress(cfg.steps, start, quiet=None if dist.main else True)
    result = TrainResult(
        run_dir=run_dir, step=start, model=model, tokenizer=s.tokenizer, examples=s.examples,
        valid_batches=val, config=cfg,
    )  # fmt: skip

    def evaluate(step: int):
        nonlocal best
        if not val:
            return
        model.eval()
        row = loss_breakdown(
            model,
            val,
            cfg.level_int,
            cfg.categories,
            cfg.eval_batches,
            loss_fn=eval_loss,
        )
        model.train()
        row = {"step": step, **row}
        evals.append(row)
        if dist.main:
            with (run_dir / "evals.jsonl").open("a") as fh:
                fh.write(_dumps(row) + "\n")
        progress.message(
            f"[eval {step}] total {row['total']:.4f} gt {row['gt']:.4f} "
            f"non_gt {row['non_gt']:.4f} ppl {row['ppl']:.2f}"
        )
        value = row.get(cfg.best_metric, float("nan"))
        if value == value and (best is None or value < best[cfg.best_metric]):
            best = {k: v for k, v in row.items() if k != "per_category"}
            if dist.main:
                _save_best(run_dir, model, s, cfg, best)
        _call(callbacks, "on_eval", step, row)

    def save(step: int):
        path = step_dir(run_dir, step)
        result.last_checkpoint = path
        if not dist.main:  # the other ranks hold the same weights, state and data position
            _call(callbacks, "on_checkpoint", step, path)
            return
        data_state = train_it.state_dict() if hasattr(train_it, "state_dict") else None
        ckpt.save_checkpoint(
            path,
            model,
            s.model_cfg,
            optimizer,
            cfg,
            {"step": step, "data": data_state, "seed": cfg.seed, "best": best},
            meta={
                "step": step,
                "run": run_dir.name,
                "best": best,
                "last_loss": metrics.rows[-1]["loss"] if metrics.rows else None,
            },
            tokenizer_dir=s.tokenizer_dir,
        )
        ckpt.prune_checkpoints(run_dir, cfg.keep_checkpoints)
        result.last_checkpoint = path
        _call(callbacks, "on_checkpoint", step, path)

    if start == 0:
        evaluate(0)
    finite = mx.array(True)
    t_report, tok_report, last_loss = time.perf_counter(), 0, float("nan")
    stop_at = min(cfg.steps, cfg.stop_after) if cfg.stop_after else cfg.steps
    step = start
    try:
        for step in range(start + 1, stop_at + 1):
            acc, n_tok, n_sup, t_step = None, 0, 0, time.perf_counter()
            for micro in range(cfg.grad_accum):
                raw = next_batch(train_it)
                key = mx.random.key(cfg.seed * 1_000_003 + step * 131 + micro)
                extra = {"key": rank_key(key, dist)}
                batch, st = prepare_batch(raw, loss_fn, extra)
                if extras is not None:  # e.g. Rho-1's reference loss, outside the compiled step
                    batch.update(extras(batch))
                last = micro == cfg.grad_accum - 1
                loss, ntoks, acc, gnorm = step_fn(batch, acc, last)
                with watchdog.waiting(f"step {step}: gradient all-reduce"):
                    mx.eval(state, loss, ntoks, acc, gnorm)
                n_tok, n_sup = n_tok + st["tokens"], n_sup + st["ntoks"]
            with watchdog.waiting(f"step {step}: token counts"):
                n_tok, n_sup = global_counts(dist, n_tok, n_sup)
            finite = finite & mx.isfinite(loss)
            tok_report += n_tok
            row = {"tokens": n_tok, "ntoks": n_sup, "step_s": time.perf_counter() - t_step}
            metrics.add(step, loss, gnorm, {**row, **peak_memory()})
            if step % cfg.report_every == 0 or step == stop_at or step % cfg.save_every == 0:
                if not finite.item():
                    raise TrainingDiverged(_diverged_msg(run_dir, step, cfg))
                rows = metrics.flush()
                dt = time.perf_counter() - t_report
                lr = float(optimizer.learning_rate.item())
                last_loss = rows[-1]["loss"]
                rows[-1].update(tok_s=tok_report / max(dt, 1e-9), lr=lr)
                progress.update(step, last_loss, tok_report / max(dt, 1e-9), lr)
                for r in rows:
                    _call(callbacks, "on_step", r["step"], r)
                t_report, tok_report = time.perf_counter(), 0
            t_other = time.perf_counter()
            if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
                evaluate(step)
            if step % cfg.save_every == 0 or step == stop_at:
                save(step)
            t_report += time.perf_counter() - t_other  # tokens/s counts training time only
    finally:
        watchdog.close()
        metrics.flush()
        progress.close()
        if step > start and dist.main:
            peak = peak_memory()
            print(
                f"peak memory: {peak['peak_mib'] / 1024:.2f} GiB allocated by MLX, "
                f"{peak.get('rss_peak_mib', float('nan')) / 1024:.2f} GiB resident",
                file=sys.stderr,
            )
        if dist.main and (metrics.rows or evals):
            plot_curves(run_dir, metrics.rows, evals, _title(cfg))
    result.step = step
    result.stopped_early = stop_at < cfg.steps
    result.history, result.evals, result.best = metrics.rows, evals, best
    result.best_dir = run_dir / BEST if best is not None else None
    if dist.main:  # rank 0 reports and runs the post-training callbacks (demo, MTP accuracy)
        _call(callbacks, "on_train_end", result)
    return result


def _save_best(run_dir: Path, model, s, cfg: TrainConfig, best: Dict[str, Any]) -> None:
    weights = tree_unflatten(list(ckpt.export_weights(model).items()))
    save_model(
        types.SimpleNamespace(parameters=lambda: weights),
        run_dir / BEST,
        s.model_cfg,
        s.tokenizer_dir,
        extra_files={
            "meta.json": _dumps({"best": best, "run": run_dir.name}, indent=2) + "\n",
            "train_config.json": _dumps(cfg.to_dict(), indent=2) + "\n",
        },
    )


def _dumps(obj, indent=None) -> str:
    return json.dumps(
        obj,
        indent=indent,
        ensure_ascii=False,
        default=lambda x: x.item() if hasattr(x, "item") else str(x),
    )


def _diverged_msg(run_dir: Path, step: int, cfg: TrainConfig) -> str:
    good = list_checkpoints(run_dir)
    where = f"last good checkpoint: {good[-1]}" if good else "no checkpoint was saved yet"
    return (
        f"loss became NaN/inf by step {step} (run {run_dir}); {where}; lower --learning-rate "
        f"(now {cfg.learning_rate}) or --grad-clip, then --resume {run_dir}"
    )


def _title(cfg: TrainConfig) -> str:
    return f"{cfg.model or cfg.preset}: select={cfg.select} λ={cfg.lam} level={cfg.level}"
