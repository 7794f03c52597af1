"""Assemble what a run needs: its directory, the model (fresh, fine-tuned, LoRA, resumed), the
tokenizer, the data and the Rho-1 reference model. Kept apart from the loop so that ``trainer.py``
reads as the algorithm.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import mlx.core as mx

from ..models.loading import (
    WEIGHTS_DIR,
    build_model,
    load_config,
    load_model,
    load_tokenizer,
    model_config,
    resolve,
)
from . import checkpoint as ckpt
from .config import TrainConfig
from .runs import RUNS_DIR, latest_run

DEFAULT_TOKENIZER = "cherry-tiny"


@dataclass
class Setup:
    model: Any
    model_cfg: dict
    tokenizer: Any = None
    tokenizer_dir: Optional[Path] = None
    train_data: Any = None
    valid_data: Any = None
    reference: Any = None
    demo_examples: Any = None  # raw test records (held-out questions)
    demo_train: Any = None  # raw train records (questions on trained facts)


def setup_run(cfg: TrainConfig):
    """(run_dir, checkpoint to resume from or None). A new run never overwrites an old one."""
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
        found = ckpt.list_checkpoints(run_dir)
        if not found:
            raise FileNotFoundError(
                f"--resume {cfg.resume}: {run_dir} has no complete checkpoint "
                "(checkpoints/step-N/trainer_state.json); start a new run instead"
            )
        cfg.name = run_dir.name
        return run_dir, found[-1]
    name = cfg.name or time.strftime(f"{_slug(cfg)}-%Y%m%d-%H%M%S")
    run_dir = runs_dir / name
    if ckpt.list_checkpoints(run_dir):
        raise ValueError(
            f"run {run_dir} already has checkpoints; pass --resume {run_dir} to continue it "
            "or choose another --name"
        )
    cfg.name = name  # the directory is created once model and data are ready (no empty runs)
    return run_dir, None


PID_FILE = "train.pid"  # present while a trainer process writes the run


def live_trainer(run_dir: Path) -> Optional[int]:
    """The id of another live process training ``run_dir`` (from its ``train.pid``), else None.
    A pid file left by a killed run names a dead process and is ignored."""
    import os

    try:
        pid = int((Path(run_dir) / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, owned by someone else
        return pid
    return pid


def _slug(cfg: TrainConfig) -> str:
    base = Path(cfg.model).name if cfg.model else cfg.preset
    return f"{base}-{cfg.select}"


def _apply_lora(model, cfg: TrainConfig) -> None:
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model.freeze()
    n = len(model.layers) if cfg.lora_layers < 0 else min(cfg.lora_layers, len(model.layers))
    linear_to_lora_layers(
        model, n, {"rank": cfg.lora_rank, "scale": cfg.lora_scale, "dropout": 0.0}
    )


def _enable_checkpointing(model) -> None:
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "checkpoint"):
        inner.checkpoint = True
    else:
        from mlx_lm.tuner.trainer import grad_checkpoint

        grad_checkpoint(model.layers[0])


def _has_tokenizer(path: Path) -> bool:
    return (path / "tokenizer.json").is_file() or (path / "tokenizer.model").is_file()


def _tokenizer_dir(cfg: TrainConfig) -> Optional[Path]:
    if cfg.tokenizer:  # explicit: a tokenizer-only folder (`tokenizer train -o`) or a model/run
        direct = Path(cfg.tokenizer).expanduser()
        if direct.is_dir() and _has_tokenizer(direct):
            return direct
        if direct.is_dir() and _has_tokenizer(direct / "tokenizer"):  # a run's own copy
            return direct / "tokenizer"
        try:
            resolve(cfg.tokenizer)
        except ValueError as err:
            raise FileNotFoundError(
                f"--tokenizer {cfg.tokenizer}: {err}; pass a folder with tokenizer.json or "
                "tokenizer.model (e.g. from `cherry-mlx tokenizer train -o DIR`)"
            ) from None
    for cand in (cfg.tokenizer, cfg.model, DEFAULT_TOKENIZER):
        if not cand:
            continue
        try:
            path = resolve(cand)
        except ValueError:
            continue
        if _has_tokenizer(path):
            return path
        if cand == cfg.tokenizer:
            raise FileNotFoundError(f"--tokenizer {cand}: {path} has no tokenizer files")
    return None


def _run_tokenizer(cfg: TrainConfig, resume_from: Optional[Path]) -> Optional[Path]:
    """A resumed run uses its own tokenizer copy; a new one the configured/default directory."""
    if resume_from is not None:
        own = Path(resume_from).parent.parent / "tokenizer"
        if own.is_dir():
            return own
    return _tokenizer_dir(cfg)


def keep_tokenizer_copy(src: Optional[Path], run_dir: Path) -> Optional[Path]:
    """Copy the tokenizer into ``runs/NAME/tokenizer/`` when a run starts.

    Checkpoints take their tokenizer files from this copy, so a tokenizer retrained in
    ``weights/`` while a run is going (or before it is resumed) cannot mismatch its token ids.
    """
    import shutil

    from ..models.loading import TOKENIZER_FILES

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


def setup_model(cfg, model, tokenizer, train_data, valid_data, resume_from) -> Setup:
    """Build or load the model (and LoRA, checkpointing, resumed weights), tokenizer and data."""
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
    if getattr(cfg, "mtp", 0):  # MTP heads exist before resume loads their weights
        from ..models.mtp import ensure_mtp_heads

        model_cfg["mtp"] = ensure_mtp_heads(model, cfg.mtp)
    mx.eval(model.parameters())
    if cfg.lora:
        _apply_lora(model, cfg)
    if cfg.grad_checkpoint:
        _enable_checkpointing(model)
    if resume_from is not None:
        if cfg.lora:
            model.load_weights(str(resume_from / "adapters.safetensors"), strict=False)
        else:
            model.load_weights(str(resume_from / "model.safetensors"))
        mx.eval(model.parameters())

    if getattr(cfg, "freeze_trunk", False):
        from ..models.mtp import freeze_for_mtp

        freeze_for_mtp(model)
    s = Setup(model=model, model_cfg=model_cfg, train_data=train_data, valid_data=valid_data)
    s.tokenizer_dir = _run_tokenizer(cfg, resume_from)
    s.tokenizer = tokenizer
    if s.tokenizer is None and s.tokenizer_dir is not None:
        if (s.tokenizer_dir / "config.json").is_file():
            s.tokenizer = load_tokenizer(s.tokenizer_dir)
        else:  # the run's own tokenizer copy (no model config beside it)
            from mlx_lm.utils import load_tokenizer as mlx_lm_load_tokenizer

            s.tokenizer = mlx_lm_load_tokenizer(s.tokenizer_dir)
    if train_data is None:
        _check_vocab(s.tokenizer, s.tokenizer_dir, model_cfg)  # it encodes the data
        if s.tokenizer is None:
            raise FileNotFoundError(
                f"no tokenizer to encode the data: pass --tokenizer DIR (the default "
                f"{WEIGHTS_DIR / DEFAULT_TOKENIZER} has no tokenizer files yet)"
            )
        from .data import load_splits

        splits = load_splits(cfg.data, s.tokenizer, cfg.seq_len)
        _print_data_summary(splits)
        s.train_data = splits["train"]
        if valid_data is None:
            s.valid_data = splits["valid"]
        s.demo_examples = splits.get("test_examples")
        s.demo_train = splits.get("train_examples")
    if cfg.select == "rho1":
        s.reference, _ = load_model(cfg.reference)
        s.reference.freeze()
        s.reference.eval()
    return s


def _print_data_summary(splits) -> None:
    """Say what was loaded, and how many examples were truncated or dropped (never silently)."""
    import sys

    for name in ("train", "valid"):
        stats = splits.get(f"{name}_stats")
        if stats is not None:
            text = stats.summary().replace("\n", "\n  ")
            print(f"[data] {name} ({splits['data_dir']}):\n  {text}", file=sys.stderr)
    if splits.get("valid_stats") is None:
        print(
            f"[data] no valid.jsonl: holding out {len(splits['valid'])} train examples",
            file=sys.stderr,
        )
