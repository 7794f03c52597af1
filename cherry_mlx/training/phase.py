"""Settings of a phase that trains inside (compress, fuse, distill): its own fields plus one nested
``TrainConfig``, never a copy of its fields. No MLX: the CLI builds options from these."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Dict, Optional, Tuple

from cherry_mlx.training.config import TrainConfig, canonical
from cherry_mlx.training.values import check_fields


@dataclass
class PhaseConfig:
    """Settings of a phase (compress, fuse, distill) that trains inside: its own fields plus one
    nested ``TrainConfig`` for the inner training runs, never a copy of its fields.

    Subclasses list the training settings their command exposes (``TRAIN_OPTIONS``) and their
    defaults (``TRAIN_DEFAULTS``). Reading ``cfg.batch_size`` reads ``cfg.train.batch_size``.
    """

    TRAIN_OPTIONS: ClassVar[Tuple[str, ...]] = ()
    TRAIN_DEFAULTS: ClassVar[Dict[str, Any]] = {}

    def __post_init__(self):
        check_fields(self)  # the phase's own fields: types, NaN/inf, bounds

    @classmethod
    def default_train(cls) -> TrainConfig:
        return TrainConfig(**cls.TRAIN_DEFAULTS)

    @classmethod
    def from_flat(cls, **kw) -> "PhaseConfig":
        """Build from one flat mapping (command line, tests): the phase's own fields, the rest
        are training settings (option spellings such as ``lambda`` accepted)."""
        own = {f.name for f in fields(cls)} - {"train"}
        mine = {k: v for k, v in kw.items() if k in own}
        rest = canonical({k: v for k, v in kw.items() if k not in own}, cls.__name__)
        train = kw.get("train") or TrainConfig(**{**cls.TRAIN_DEFAULTS, **rest})
        return cls(**mine, train=train)

    def with_(self, **kw) -> "PhaseConfig":
        """A copy with some fields changed, own or training ones."""
        own = {f.name for f in fields(self)} - {"train"}
        mine = {k: v for k, v in kw.items() if k in own}
        rest = {k: v for k, v in kw.items() if k not in own}
        return replace(self, **mine, train=replace(self.train, **canonical(rest)))

    def __getattr__(self, name):
        if name != "train" and name in _TRAIN_FIELDS:
            return getattr(self.train, name)
        raise AttributeError(f"{type(self).__name__} has no setting {name!r}")

    def stage(self, steps: int, name: Optional[str], runs_dir, **kw) -> TrainConfig:
        """The inner training run: ``steps`` updates, one checkpoint at the end, no demo; the
        warmup is at most a fifth of the run (the one rule for every phase)."""
        return replace(
            self.train, steps=steps, name=name, runs_dir=str(runs_dir) if runs_dir else None,
            warmup=min(self.train.warmup, max(steps // 5, 0)), save_every=max(steps, 1),
            keep_checkpoints=1, demo=False, resume=None, stop_after=None, **kw,
        )  # fmt: skip


_TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
