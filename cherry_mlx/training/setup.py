"""Assemble what a run needs: its directory, the model (fresh, fine-tuned, LoRA, resumed), the
tokenizer, the data and the Rho-1 reference model. Kept apart from the loop so that ``trainer.py``
reads as the algorithm.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import mlx.core as mx
from mlx_lm.tuner.trainer import grad_checkpoint
from mlx_lm.tuner.utils import linear_to_lora_layers

from cherry_mlx.data.frequency import top_tokens
from cherry_mlx.models.loading import (
    TOKENIZER_FILES,
    build_model,
    load_config,
    load_model,
    model_config,
    resolve,
)
from cherry_mlx.models.mtp import (
    ensure_mtp_heads,
    freeze_for_mtp,
    has_mtp,
    init_heads_from_trunk,
    set_draft_vocab,
)
from cherry_mlx.models.outputs import is_ours
from cherry_mlx.models.runs import (
    RUNS_DIR,
    damaged_checkpoint,
    latest_run,
    list_checkpoints,
    live_trainer,
)
from cherry_mlx.training.config import TrainConfig
from cherry_mlx.training.prepare import find_tokenizer, open_tokenizer, prepare


@dataclass
class Setup:
    model: Any
    model_cfg: dict
    tokenizer: Any = None
    tokenizer_dir: Optional[Path] = None
    train_data: Any = None
    valid_data: Any = None
    reference: Any = None
    examples: Any = None  # raw records {"train": [...], "test": [...]} (for post-training demos)


def setup_run(cfg: TrainConfig):
    """(run_dir, checkpoint to resume from or None). A new run never overwrites an old one.
    ``cfg`` is read, never changed: the run's name is ``run_dir.name``."""
    runs_dir = Path(cfg.runs_dir) if cfg.runs_dir else RUNS_DIR
    if cfg.resume:
        if cfg.resume == "latest":
            run_dir = latest_run(runs_dir)
            if run_dir is None:
                raise FileNotFoundError(f"--resume latest: no runs in {runs_dir}")
        else:
            run_dir = Path(cfg.resume).expanduser()
            if not run_dir.is_dir():
                run_dir = runs_dir / cfg.resume
            if not run_dir.is_dir():
                raise FileNotFoundError(
                    f"--resume {cfg.resume}: no such run directory; pass runs/NAME, NAME "
                    f"(under {runs_dir}/) or 'latest'"
                )
        live = live_trainer(run_dir)
        if live is not None:
            raise ValueError(
                f"--resume {cfg.resume}: {run_dir} is still being trained by process {live}; "
                "wait for it or stop it (Ctrl-C / kill) first, or name the run to resume"
            )
        found = list_checkpoints(run_dir)
        if not found:
            raise FileNotFoundError(
                f"--resume {cfg.resume}: {run_dir} has no complete checkpoint "
                "(checkpoints/step-N/trainer_state.json); start a new run instead"
            )
        return run_dir, intact_checkpoint(found, cfg.resume)
    run_dir = runs_dir / (cfg.name or default_run_name(cfg))
    live = live_trainer(run_dir)
    if live is not None:
        raise ValueError(
            f"run {run_dir} is being trained by process {live}; wait for it or stop it, or "
            "choose another --name"
        )
    if list_checkpoints(run_dir):
        raise ValueError(
            f"run {run_dir} already has checkpoints; choose another --name (a train run can "
            f"also be continued: cherry-mlx train --resume {run_dir})"
        )
    if run_dir.is_dir() and not is_ours(run_dir):
        raise ValueError(
            f"{run_dir} exists and holds files that are not a run's; choose another --name "
            "(or --runs-dir), or move those files away"
        )
    return run_dir, None  # the directory is created once model and data are ready (no empty runs)


def intact_checkpoint(found, resume: str) -> Path:
    """The newest of ``found`` (oldest first) that is not damaged; skipped ones are reported."""
    for path in reversed(found):
        why = damaged_checkpoint(path)
        if why is None:
            if path != found[-1]:
                print(f"resuming from {path.name}, the newest intact checkpoint", file=sys.stderr)
            return path
        print(f"note: skipping damaged checkpoint {path}: {why}", file=sys.stderr)
    raise ValueError(
        f"--resume {resume}: every checkpoint of {found[-1].parent.parent} is damaged "
        f"({damaged_checkpoint(found[-1])} in {found[-1].name}); start a new run instead"
    )


def default_run_name(cfg: TrainConfig) -> str:
    """``<model or preset>-<selection>-<date>-<time>`` for a run started without ``--name``."""
    base = (Path(cfg.model).name if cfg.model else cfg.preset).lstrip(".") or "run"
    return time.strftime(f"{base}-{cfg.select}-%Y%m%d-%H%M%S")


def _apply_lora(model, cfg: TrainConfig) -> None:
    model.freeze()
    n = len(model.layers) if cfg.lora_layers < 0 else min(cfg.lora_layers, len(model.layers))
    linear_to_lora_layers(
        model, n, {"rank": cfg.lora_rank, "scale": cfg.lora_scale, "dropout": 0.0}
    )


def _enable_checkpointing(model) -> None:
    """Recompute every block call in the backward pass (``mx.checkpoint`` per call): a looped
    core keeps one hidden state per loop and one block's activations at a time; a MoEE model's
    experts are each checkpointed the same way. Other models: mlx-lm's ``grad_checkpoint``."""
    trunks = [e.model for e in getattr(model, "experts", None) or []]
    inner = getattr(model, "model", None)
    if not trunks and inner is not None and hasattr(inner, "checkpoint"):
        trunks = [inner]
    for t in trunks:
        t.checkpoint = True
    if not trunks:
        grad_checkpoint(model.layers[0])


def memory_warning(cfg: TrainConfig, model, available=None) -> Optional[str]:
    """A one-line warning when the planned peak of this run exceeds the memory available now,
    naming the settings that would make it fit; None when it fits (or cannot be told)."""
    from cherry_mlx.models.memory import GIB, available_bytes, plan_training, shape_of

    avail = available_bytes() if available is None else available
    if not avail:
        return None
    shape = shape_of(model, cfg.mtp)
    dtype = {2: "bfloat16"}.get(_weight_bytes(model), "float32")
    plan = plan_training(shape, cfg.batch_size, cfg.seq_len, cfg.grad_checkpoint,
                         cfg.optimizer, dtype)  # fmt: skip
    if plan.peak <= avail:
        return None
    fixes = [] if cfg.grad_checkpoint else ["--grad-checkpoint"]
    if cfg.optimizer == "adamw":
        fixes.append("--optimizer adafactor")
    fixes += ["a smaller --batch-size or --seq-len"] + ([] if cfg.lora else ["--lora"])
    return (
        f"warning: this run is planned to need {plan.peak / GIB:.1f} GiB at its peak but "
        f"{avail / GIB:.1f} GiB is available; it may run out of memory. Try "
        f"{', '.join(fixes)} (cherry-mlx info MODEL --batch-size ... shows the plan)"
    )


def _warn_memory(cfg: TrainConfig, model) -> None:
    warning = memory_warning(cfg, model)
    if warning:
        print(warning, file=sys.stderr)


def _weight_bytes(model) -> int:
    from mlx.utils import tree_flatten

    for _, a in tree_flatten(model.parameters()):
        return a.dtype.size
    return 4


def _run_tokenizer(cfg: TrainConfig, resume_from: Optional[Path]) -> Optional[Path]:
    """A resumed run uses its own tokenizer copy; a new one the configured/default directory."""
    if resume_from is not None:
        own = Path(resume_from).parent.parent / "tokenizer"
        if own.is_dir():
            return own
    return find_tokenizer(cfg.tokenizer, [cfg.model])


def keep_tokenizer_copy(src: Optional[Path], run_dir: Path) -> Optional[Path]:
    """Copy the tokenizer into ``runs/NAME/tokenizer/`` when a run starts.

    Checkpoints take their tokenizer files from this copy, so a tokenizer retrained in
    ``weights/`` while a run is going (or before it is resumed) cannot mismatch its token ids.
    """
    own = Path(run_dir) / "tokenizer"
    if src is None or Path(src).resolve() == own.resolve():
        return src
    own.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, own / name)
    return own


def _check_vocab(tokenizer, tokenizer_dir, model_cfg: dict) -> None:
    """A tokenizer with more ids than the model's embedding rows would index past the table
    (garbage losses, overflowing perplexity): fail before training, naming both sizes."""
    rows = model_cfg.get("vocab_size")
    if tokenizer is None or not rows:
        return
    try:
        n = len(getattr(tokenizer, "_tokenizer", tokenizer))
    except TypeError:
        return
    if n > int(rows):
        raise ValueError(
            f"tokenizer {tokenizer_dir} has {n:,} tokens but the model has vocab_size "
            f"{int(rows):,}: train the tokenizer with --vocab-size <= {int(rows)} or use a "
            f"model/preset whose config.json has vocab_size >= {n}"
        )


def setup_model(cfg, model, tokenizer, train_data, valid_data, resume_from, reference) -> Setup:
    """Build or load the model (and LoRA, checkpointing, resumed weights), tokenizer and data.
    ``reference``: a preloaded Rho-1 reference model (else loaded from ``cfg.reference``)."""
    if model is None:
        if cfg.model:
            model, base = load_model(cfg.model)
        else:
            base = load_config(resolve(cfg.preset))
            model = build_model(base)  # random init drawn from the seeded global PRNG
        model_cfg = model_config(model, base)
    else:
        try:
            model_cfg = model_config(model)
        except Exception:  # a colleague's model without HF-style args
            model_cfg = dict(getattr(model, "config", {}) or {})
    if cfg.mtp:  # MTP heads exist before resume loads their weights
        old = (model.mtp.num_heads, model.mtp.kind) if has_mtp(model) else None
        model_cfg["mtp"] = ensure_mtp_heads(model, cfg.mtp, cfg.mtp_kind)
        if old != (model.mtp.num_heads, model.mtp.kind) and cfg.mtp_init == "trunk":
            init_heads_from_trunk(model)  # new heads start as a copy of the last trunk layer
    if not cfg.lora:  # before a fresh model's weights are allocated
        _warn_memory(cfg, model)
    mx.eval(model.parameters())
    if cfg.lora:
        _apply_lora(model, cfg)
        _warn_memory(cfg, model)  # with the adapters: what is trained decides the plan
    if cfg.grad_checkpoint:
        _enable_checkpointing(model)
    if resume_from is not None:
        if cfg.lora:
            model.load_weights(str(resume_from / "adapters.safetensors"), strict=False)
        else:
            model.load_weights(str(resume_from / "model.safetensors"))
        mx.eval(model.parameters())
    if cfg.freeze_trunk:
        freeze_for_mtp(model)
    s = Setup(model=model, model_cfg=model_cfg, train_data=train_data, valid_data=valid_data)
    s.tokenizer_dir = _run_tokenizer(cfg, resume_from)
    s.tokenizer = tokenizer
    if train_data is None:
        prep = prepare(
            cfg.data, cfg.seq_len, tokenizer_obj=tokenizer, tokenizer_dir=s.tokenizer_dir,
            check=lambda tok: _check_vocab(tok, s.tokenizer_dir, model_cfg),
        )  # fmt: skip
        s.tokenizer = prep.tokenizer
        s.train_data = prep.train
        if valid_data is None:
            s.valid_data = prep.valid
        s.examples = {"test": prep.splits.get("test_examples"),
                      "train": prep.splits.get("train_examples")}  # fmt: skip
    elif s.tokenizer is None and s.tokenizer_dir is not None:
        s.tokenizer = open_tokenizer(s.tokenizer_dir)
    if cfg.mtp and cfg.mtp_draft_vocab:  # EAGLE-3's reduced draft vocabulary, saved with the model
        ids = top_tokens(s.train_data, cfg.mtp_draft_vocab, model.args.vocab_size)
        s.model_cfg["mtp"] = set_draft_vocab(model, ids)
    if cfg.select == "rho1":
        if reference is None:
            reference, _ = load_model(cfg.reference)
        reference.freeze()
        reference.eval()
        s.reference = reference
    return s
