"""Settings of ``cherry-mlx compress`` (no MLX: the CLI builds its options from them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Optional, Tuple

from cherry_mlx.training.config import PhaseConfig, TrainConfig, setting


@dataclass
class CompressConfig(PhaseConfig):
    """Settings of ``cherry-mlx compress``; healing trains with the nested ``train`` settings."""

    TRAIN_OPTIONS: ClassVar[Tuple[str, ...]] = (
        "data", "tokenizer", "batch_size", "seq_len", "learning_rate", "warmup", "lam",
        "select", "seed", "eval_batches", "grad_checkpoint",
    )  # fmt: skip
    TRAIN_DEFAULTS: ClassVar[Dict[str, Any]] = dict(
        batch_size=16, seq_len=256, learning_rate=1e-3, warmup=10, eval_every=0,
        eval_batches=-1, demo=False,
    )  # fmt: skip

    model: Optional[str] = setting(None, "Model dir, run or preset (default: the latest run).")
    out: Optional[str] = setting(
        None, "Output dir (default runs/<source>-<label>).", "--out", short="-o"
    )
    to: Optional[str] = setting(None, "Unique layers after merging, e.g. 6L.")
    factor: Optional[int] = setting(None, "Or: merge every r adjacent layers.")
    groups: Optional[str] = setting(
        None, "Or: explicit grouping, sizes 3,3,2 or ranges 0-2,3-5,6-7."
    )
    loops: int = setting(1, "Core loops after merging (1 = no recurrence).")
    prelude: int = setting(1, "Unique layers before the looped core.")
    coda: int = setting(1, "Unique layers after the looped core.")
    heal: bool = setting(True, "SGT-heal (else merge+unroll only).")
    pre_unroll_steps: int = setting(100, "SGT steps on the merged model before unrolling.")
    heal_steps: int = setting(500, "SGT steps after unrolling.")
    control: bool = setting(
        False, "Also train the uncompressed source for the same total steps (fair reference)."
    )
    train: TrainConfig = field(default_factory=lambda: CompressConfig.default_train())

    def label(self) -> str:
        what = self.to or (f"f{self.factor}" if self.factor else "g" + str(self.groups))
        what = what if str(what).upper().endswith("L") or not str(what).isdigit() else f"{what}L"
        return f"{what}x{self.loops}".replace(",", "_")
