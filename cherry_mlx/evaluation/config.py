"""Settings of ``cherry-mlx eval``, ``tag``, ``ssgt-eval`` and ``ssgt-retention`` (no MLX: the CLI
builds its options from them)."""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass
from typing import List, Optional

from cherry_mlx.data.categories import CATEGORIES, LEVELS
from cherry_mlx.models.presets import DEFAULT_PRESET
from cherry_mlx.training.config import setting
from cherry_mlx.training.values import check_fields


@dataclass
class EvalConfig:
    """Measure what SGT did: loss on GT and non-GT tokens against the baseline, the wave factor
    W and W̃, recovered fraction R and ROI, gradient coupling γ̄."""

    model: Optional[str] = setting(
        None,
        "Run directory, checkpoint, model dir or preset (default: the latest run).",
        argument=True,
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
    etas: Optional[List[float]] = setting(
        None,
        "Theorem-3 step size; repeat the option for several (default: a 1% predicted GT drop, "
        "x4 and x1/4).",
        flag="--eta",
    )
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
        for eta in self.etas or []:
            if not math.isfinite(eta) or eta <= 0:
                raise ValueError(f"--eta {eta}: a step size must be a finite number > 0")
        if self.coupling_batches < 1:
            raise ValueError(f"--coupling-batches {self.coupling_batches}: must be >= 1")
        for c in self.categories or []:
            if c not in CATEGORIES:
                raise ValueError(f"--categories {c!r}: unknown, use some of {','.join(CATEGORIES)}")
        if self.supervised_fraction is not None and not 0 < self.supervised_fraction <= 1:
            raise ValueError(f"--supervised-fraction {self.supervised_fraction}: must be in (0, 1]")


@dataclass
class SSGTEvalConfig:
    """Generate on held-out prompts and score the SSGT moments with keyword classifiers (paper
    3.2.5, Table 12): rates with 95% Wilson intervals and counts, overall and per language.

    Greedy decoding unless --temp > 0.
    """

    model: Optional[str] = setting(
        None,
        "Run directory, checkpoint, model dir or preset (default: the latest run).",
        argument=True,
    )
    prompts: Optional[str] = setting(
        None,
        "Held-out SSGT prompts .jsonl (default: weights/data/default/ssgt_prompts.jsonl).",
    )
    # long enough for marker + corrected answer in the bundled data
    max_tokens: int = setting(128, "Tokens per answer.", short="-m", at_least=1)
    json_out: Optional[str] = setting(
        None,
        "Write the report (rates, intervals, every response) here, and a bar chart beside it "
        "(.png).",
        flag="--json",
    )
    temp: float = setting(0.0, "Sampling temperature (0 = greedy).", at_least=0)
    seed: int = setting(0, "Random seed (used when --temp > 0).", at_least=0)
    limit: Optional[int] = setting(
        None, "At most N prompts of each kind and language (a quick look).", at_least=1
    )
    show: int = setting(1, "Example responses printed per kind.", at_least=0)

    def __post_init__(self):
        check_fields(self)


@dataclass
class RetentionConfig:
    """Per-metric retention = candidate rate / reference rate (of good outcomes): how much of a
    taught SSGT moment a model keeps (Table 11)."""

    reference: str = setting(
        MISSING,
        "ssgt-eval --json report of the model with the moment (after SSGT).",
        argument=True,
    )
    candidate: str = setting(
        MISSING,
        "Report of the model to compare (e.g. after further non-SSGT training).",
        argument=True,
    )
    baseline: Optional[str] = setting(
        None, "Report of the model before SSGT: adds the share of the gain kept."
    )


@dataclass
class TagFileConfig:
    """Tag GT tokens (paper §3.2.2) and show their statistics; with --refine, promote tokens by
    contrastive refinement with a model.

    Example: cherry-mlx tag weights/data/default/valid.jsonl -o /tmp/valid.tagged.jsonl
    """

    data: str = setting(
        MISSING, "Input JSONL (messages, prompt/completion or text).", argument=True
    )
    out: Optional[str] = setting(None, "Output JSONL with spans.", short="-o")
    tokenizer: str = setting(
        DEFAULT_PRESET,
        "Model/preset whose tokenizer and chat template measure the statistics ('none' = count "
        "characters).",
    )
    overwrite: bool = setting(False, "Re-tag turns that have spans.")
    turn_initial: bool = setting(False, "Also tag the first word of every turn (Table 2).")
    refine: Optional[str] = setting(None, "Model for contrastive refinement (preset, dir or run).")
    layer: Optional[int] = setting(
        None, "Layer compared by the refinement (default: the middle one).", at_least=0
    )
    tau: float = setting(5.0, "Promote when d/median(d) > tau.", at_least=0)
    max_examples: int = setting(32, "Examples refined.", at_least=1)
    plot: bool = setting(True, "Write OUT.png next to OUT.")
    json_out: bool = setting(False, "Print the report as JSON.", flag="--json")

    def __post_init__(self):
        check_fields(self)
