"""Settings of ``cherry-mlx compress`` (no MLX: the CLI builds its options from them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Optional, Tuple

from cherry_mlx.training.config import TrainConfig, setting
from cherry_mlx.training.phase import PhaseConfig

METHODS = ("average", "prune-bi", "prune-angular")


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
    factor: Optional[int] = setting(None, "Or: merge every r adjacent layers.", at_least=1)
    groups: Optional[str] = setting(
        None, "Or: explicit grouping, sizes 3,3,2 or ranges 0-2,3-5,6-7."
    )
    method: str = setting(
        "average",
        "How depth is removed: average (each group averaged, the paper), prune-bi (drop the "
        "lowest block-influence layers, ShortGPT) or prune-angular (drop the contiguous block "
        "with the smallest angular distance, Gromov et al.).",
    )
    loops: int = setting(1, "Core loops after merging (1 = no recurrence).", at_least=1)
    prelude: Optional[int] = setting(
        None, "Unique layers before the looped core (default 1).", at_least=0
    )
    coda: Optional[int] = setting(
        None, "Unique layers after the looped core (default 1).", at_least=0
    )
    layout: Optional[str] = setting(
        None, "Prelude,core,coda at once, e.g. 4,16,4 (alone it also sets --to P+C+Q)."
    )
    heal: bool = setting(True, "SGT-heal (else merge+unroll only).")
    # the paper heals 100 + 500 steps; the defaults fit minutes on a laptop CPU
    pre_unroll_steps: int = setting(
        40, "SGT steps on the merged model before unrolling (paper: 100).", at_least=0
    )
    heal_steps: int = setting(80, "SGT steps after unrolling (paper: 500).", at_least=0)
    control: bool = setting(
        False, "Also train the uncompressed source for the same total steps (fair reference)."
    )
    force: bool = setting(
        False, "Write into a non-empty --out, replacing only what compress writes there."
    )
    train: TrainConfig = field(default_factory=lambda: CompressConfig.default_train())

    def __post_init__(self):
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"--method {self.method!r}: use one of {', '.join(METHODS)}")
        if self.layout is not None:
            if self.prelude is not None or self.coda is not None:
                raise ValueError("give --layout P,C,Q or --prelude/--coda, not both")
            if (self.to, self.factor, self.groups) == (None, None, None):
                self.to = f"{sum(parse_layout(self.layout))}L"
        self.prelude = 1 if self.prelude is None else self.prelude
        self.coda = 1 if self.coda is None else self.coda

    def label(self) -> str:
        what = self.to or (f"f{self.factor}" if self.factor else "g" + str(self.groups))
        what = what if str(what).upper().endswith("L") or not str(what).isdigit() else f"{what}L"
        tag = "" if self.method == "average" else f"-{self.method}"
        return f"{what}x{self.loops}{tag}".replace(",", "_")


def parse_layout(text: str) -> Tuple[int, int, int]:
    """``"2,20,2"`` -> (prelude, core, coda); one-line error otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != 3 or min(vals) < 0 or vals[1] < 1:
        raise ValueError(
            f"--layout {text!r} is not prelude,core,coda; write three counts with a core of at "
            f"least one layer, e.g. --layout 1,4,1"
        )
    return vals  # type: ignore[return-value]
