"""Settings of ``cherry-mlx eval`` (no MLX: the CLI builds its options from them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from cherry_mlx.data.categories import CATEGORIES, LEVELS
from cherry_mlx.training.config import setting
from cherry_mlx.training.values import check_fields


@dataclass
class EvalConfig:
    """Settings of ``cherry-mlx eval`` (its options are generated from these fields)."""

    model: Optional[str] = setting(
        None, "Run directory, checkpoint, model dir or preset (default: the latest run)."
    )
    baseline: Optional[str] = setting(
        None, "Baseline checkpoint (default: the run's step-0 checkpoint)."
    )
    full_run: Optional[str] = setting(
        None,
        "Full-sequence run (or checkpoint) for R and ROI; its checkpoint at the same step is used.",
    )
    data: Optional[str] = setting(
        None, "Held-out .jsonl, or a data directory (default: the bundled data)."
    )
    split: str = setting("valid", "Split file in a data directory.")
    tokenizer: Optional[str] = setting(None, "Tokenizer (default: the model's).")
    level: str = setting("gt", "GT set = level >= gt (1), super (2) or ssgt (3).")
    categories: Optional[List[str]] = setting(None, "Comma-separated GT categories.")
    batch_size: int = setting(8, "Sequences per batch.")
    seq_len: int = setting(256, "Maximum sequence length.")
    max_batches: int = setting(-1, "Held-out batches to use (-1 = all).")
    supervised_fraction: Optional[float] = setting(
        None, "|G|/|T| for ROI (default: the GT share of the held-out response tokens)."
    )
    coupling: bool = setting(False, "Measure γ̄ (Eq. 5) and check Theorem 3 by one GT step.")
    coupling_batches: int = setting(4, "Batches the gradients are taken over.")
    # Theorem-3 step sizes (default: derived, see evaluation.coupling); a repeatable option
    etas: Optional[List[float]] = None
    shuffled: bool = setting(False, "Repeat on token-shuffled responses (Corollary 5 control).")
    seed: int = setting(0, "Seed of the token shuffle.", at_least=0)
    json_out: Optional[str] = setting(None, "Write the results as JSON.", "--json")
    plot: Optional[str] = setting(
        None, "PNG of the losses (default: RUN/eval_wave.png when a run is evaluated)."
    )

    def __post_init__(self):
        check_fields(self)  # types, NaN/inf, bounds
        if isinstance(self.categories, str):
            self.categories = [c.strip() for c in self.categories.split(",") if c.strip()] or None
        if self.level not in LEVELS:
            raise ValueError(f"--level {self.level!r}: use one of {tuple(LEVELS)}")
        if self.batch_size < 1 or self.seq_len < 2:
            raise ValueError("--batch-size must be >= 1 and --seq-len >= 2")
        if self.max_batches == 0 or self.max_batches < -1:
            raise ValueError(f"--max-batches {self.max_batches}: use N >= 1, or -1 for all")
        if self.coupling_batches < 1:
            raise ValueError(f"--coupling-batches {self.coupling_batches}: must be >= 1")
        for c in self.categories or []:
            if c not in CATEGORIES:
                raise ValueError(f"--categories {c!r}: unknown, use some of {','.join(CATEGORIES)}")
        if self.supervised_fraction is not None and not 0 < self.supervised_fraction <= 1:
            raise ValueError(f"--supervised-fraction {self.supervised_fraction}: must be in (0, 1]")
