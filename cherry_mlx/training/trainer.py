"""The SGT training loop: ``train(cfg, ...)`` -> ``TrainResult``.

One loop serves every phase: SGT fine-tuning and from-scratch training here, and colleagues'
healing (compression), MTP-head training and MoEE gate training, who pass their own ``model`` and
``loss_fn(model, batch) -> (loss, ntoks)``. Per micro-batch: prepare the batch on the host (pad,
positions), one compiled step, one ``mx.eval``. Host reads (``.item()``) happen only on reporting,
eval and checkpoint steps. All randomness is derived from (seed, step), so a resumed run replays an
uninterrupted one exactly.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import mlx.core as mx
import numpy as np

from ..selection.losses import per_token_ce
from . import checkpoint as ckpt
from .config import TrainConfig
from .data import next_batch, prepare_batch, train_iterator, valid_batches
from .distributed import (
    Watchdog,
    barrier,
    broadcast_text,
    check_batch_size,
    current_ranks,
    global_counts,
    rank_key,
    shard_iterator,
)
from .evaluate import split_losses
from .report import MetricsLog, Progress, plot_curves, read_jsonl_rows
from .setup import PID_FILE, keep_tokenizer_copy, setup_model, setup_run
from .step import make_optimizer, make_step


class TrainingDiverged(ValueError):
    """The loss became NaN/inf; the last good checkpoint is left untouched."""


class TrainCallback:
    """Hooks (all optional): subclass and override what you need."""

    def on_step(self, step: int, metrics: Dict[str, Any]) -> None: ...

    def on_eval(self, step: int, metrics: Dict[str, Any]) -> None: ...

    def on_checkpoint(self, step: int, path: Path) -> None: ...


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
    demo: Optional[Dict[str, Any]] = None
    model: Any = None


def _default_loss(cfg: TrainConfig):
    from ..selection.select import make_loss

    return make_loss(cfg.select, cfg.lam, cfg.level_int, cfg.categories)


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
) -> TrainResult:
    """Train ``model`` (default: built from ``cfg``) and return the run's result.

    ``train_data``: encoded examples (``cherry_mlx.data.encode.Encoded``) or an endless iterator of
    batch dicts (with ``state_dict``/``load_state_dict`` for exact resume); default: the data in
    ``cfg.data``, encoded with ``tokenizer``. ``valid_data``: encoded examples or a list of batches.
    ``loss_fn``: default the SGT loss of ``cfg`` (selection, λ, level, categories).
    """
    cfg.validate()
    dist = current_ranks()  # under mlx.launch: rank 0 writes the run, every rank computes
    check_batch_size(cfg.batch_size, dist)
    run_dir, resume_from = setup_run(cfg)
    if dist.size > 1:  # one run name for all ranks (a new run's default name is the time)
        cfg.name = broadcast_text(cfg.name, dist)
        run_dir = run_dir.parent / cfg.name
    mx.random.seed(cfg.seed)
    s = setup_model(cfg, model, tokenizer, train_data, valid_data, resume_from)
    model, loss_fn = s.model, (loss_fn or _default_loss(cfg))
    if cfg.mtp:  # trunk loss + β·mean MTP head loss (models/mtp.py)
        from ..models.mtp import MTPLoss

        loss_fn = MTPLoss(loss_fn, cfg.mtp_weight, cfg.freeze_trunk, cfg.mtp_targets)
        if cfg.best_metric == "total":  # heads do not move the trunk's loss: pick best/ by both
            cfg.best_metric = "loss"
    hint = f"; continue with: cherry-mlx train --resume {run_dir} (any number of ranks)"
    watchdog = Watchdog(dist, cfg.collective_timeout, hint)
    with watchdog.waiting("start: the other ranks loading the model and data"):
        barrier(dist)  # every rank has checked the run before rank 0 marks it live
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / PID_FILE).write_text(f"{os.getpid()}\n")  # --resume refuses a live run
        s.tokenizer_dir = keep_tokenizer_copy(s.tokenizer_dir, run_dir)
        cfg.save(run_dir / "train_config.json")
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
        if dist.main:
            (run_dir / "evals.jsonl").write_text("".join(_dumps(e) + "\n" for e in evals))
    elif dist.main:
        for name in ("metrics.jsonl", "evals.jsonl"):
            (run_dir / name).unlink(missing_ok=True)

    step_fn, state = make_step(model, optimizer, loss_fn, cfg.grad_clip, group=dist.group)
    ref_model = s.reference
    model.train()
    progress = Progress(cfg.steps, start, quiet=None if dist.main else True)
    result = TrainResult(run_dir=run_dir, step=start, model=model)

    def evaluate(step: int):
        nonlocal best
        if not val:
            return
        model.eval()
        row = split_losses(
            model,
            val,
            cfg.level_int,
            cfg.categories,
            cfg.eval_batches,
            loss_fn=_eval_loss(loss_fn, ref_model),
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
        path = run_dir / "checkpoints" / f"step-{step}"
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
            acc, n_tok, n_sup = None, 0, 0
            for micro in range(cfg.grad_accum):
                raw = next_batch(train_it)
                key = mx.random.key(cfg.seed * 1_000_003 + step * 131 + micro)
                extra = {"key": rank_key(key, dist)}
                if ref_model is not None:
                    extra["ref_ce"] = mx.stop_gradient(
                        per_token_ce(
                            ref_model(mx.array(np.asarray(raw["inputs"]))),
                            mx.array(np.asarray(raw["targets"])),
                        )
                    )
                batch, st = prepare_batch(raw, loss_fn, extra)
                if "ref_ce" in batch and batch["ref_ce"].shape != batch["targets"].shape:
                    pad = batch["targets"].shape[1] - batch["ref_ce"].shape[1]
                    batch["ref_ce"] = mx.pad(batch["ref_ce"], [(0, 0), (0, pad)])
                last = micro == cfg.grad_accum - 1
                loss, ntoks, acc, gnorm = step_fn(batch, acc, last)
                with watchdog.waiting(f"step {step}: gradient all-reduce"):
                    mx.eval(state, loss, ntoks, acc, gnorm)
                n_tok, n_sup = n_tok + st["tokens"], n_sup + st["ntoks"]
            with watchdog.waiting(f"step {step}: token counts"):
                n_tok, n_sup = global_counts(dist, n_tok, n_sup)
            finite = finite & mx.isfinite(loss)
            tok_report += n_tok
            metrics.add(step, loss, gnorm, {"tokens": n_tok, "ntoks": n_sup})
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
        if dist.main:
            (run_dir / PID_FILE).unlink(missing_ok=True)
            if metrics.rows or evals:
                plot_curves(run_dir, metrics.rows, evals, _title(cfg))
    result.step = step
    result.stopped_early = stop_at < cfg.steps
    result.history, result.evals, result.best = metrics.rows, evals, best
    result.best_dir = run_dir / "best" if best is not None else None
    if not dist.main:  # rank 0 reports and runs the demo
        return result
    if cfg.mtp and val:  # per-head top-1 accuracy on held-out data
        from ..models.mtp import report_mtp_accuracy

        progress.message(
            report_mtp_accuracy(
                model, val[: max(cfg.eval_batches, 1)] if cfg.eval_batches > 0 else val, run_dir
            )
        )
    if cfg.demo and not result.stopped_early and s.demo_examples and s.tokenizer is not None:
        from .demo import run_demo

        progress.message("scoring held-out questions (demo) ...")
        result.demo = run_demo(
            model, s.tokenizer, s.demo_examples, run_dir, cfg.seed, train_records=s.demo_train
        )
    return result


def _eval_loss(loss_fn, ref_model):
    """The objective on held-out batches; rho1 needs the reference loss added to the batch."""
    if ref_model is None:
        return loss_fn

    def with_ref(model, batch):
        batch = dict(batch, ref_ce=per_token_ce(ref_model(batch["inputs"]), batch["targets"]))
        return loss_fn(model, batch)

    return with_ref


def _save_best(run_dir: Path, model, s, cfg: TrainConfig, best: Dict[str, Any]) -> None:
    import types

    from ..models.loading import save_model

    weights = ckpt.tree_unflatten(list(ckpt.export_weights(model).items()))
    save_model(
        types.SimpleNamespace(parameters=lambda: weights),
        run_dir / "best",
        s.model_cfg,
        s.tokenizer_dir,
        extra_files={
            "meta.json": _dumps({"best": best, "run": run_dir.name}, indent=2) + "\n",
            "train_config.json": _dumps(cfg.to_dict(), indent=2) + "\n",
        },
    )


def _dumps(obj, indent=None) -> str:
    import json

    return json.dumps(
        obj,
        indent=indent,
        ensure_ascii=False,
        default=lambda x: x.item() if hasattr(x, "item") else str(x),
    )


def _diverged_msg(run_dir: Path, step: int, cfg: TrainConfig) -> str:
    good = ckpt.list_checkpoints(run_dir)
    where = f"last good checkpoint: {good[-1]}" if good else "no checkpoint was saved yet"
    return (
        f"loss became NaN/inf by step {step} (run {run_dir}); {where}; lower --learning-rate "
        f"(now {cfg.learning_rate}) or --grad-clip, then --resume {run_dir}"
    )


def _title(cfg: TrainConfig) -> str:
    return f"{cfg.model or cfg.preset}: select={cfg.select} λ={cfg.lam} level={cfg.level}"
