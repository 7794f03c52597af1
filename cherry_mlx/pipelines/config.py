"""Settings of ``cherry-mlx repro`` and its three budgets (no MLX: the CLI reads them for --help).

One knob, ``--budget``, sizes every experiment: ``tiny`` takes about three CPU-minutes on the
cherry-tiny (CI: every row filled; one seed, so verdicts that need a seed spread are
"inconclusive"); ``cpu`` was sized for a couple of hours on a ~135M pretrained model on 2 cores,
but at ~5 s per SmolLM2-135M step of 4 x 128 tokens it is several times that (``--set`` scales
it down: docs/repro-smollm2.md's header gives its budget and the stages' summed wall time);
``paper`` uses the paper's step counts (500 SGT steps, 100 + 500 healing steps, three seeds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Dict, Optional, Tuple

from cherry_mlx.models.presets import TINY_PRESET
from cherry_mlx.pipelines import stage as registry
from cherry_mlx.training.config import setting


@dataclass(frozen=True)
class Budget:
    """How big each experiment is; everything else (arms, metrics, rules) is fixed."""

    name: str
    pretrain_steps: int  # full-loss training from scratch, only for a MODEL without weights
    steps: int  # SGT arms (all at matched steps)
    batch_size: int
    seq_len: int
    learning_rate: float  # fine-tuning / healing
    eval_batches: int  # held-out batches per evaluation set (-1 = all)
    coupling_batches: int  # batches for γ̄ (one γ̄ per batch: their spread is the noise)
    layouts: Tuple[Tuple[int, int], ...]  # (depth divisor, loops): depth // divisor unique layers
    pre_unroll_steps: int
    heal_steps: int
    mtp_heads: int
    mtp_steps: int
    decode_prompts: int
    decode_tokens: int
    decode_reps: int
    moee_steps: int  # S: experts S steps each, then S fused steps; single gets 2S + S
    seeds: int


BUDGETS = {
    "tiny": Budget(
        "tiny", pretrain_steps=30, steps=3, batch_size=4, seq_len=128, learning_rate=1e-3,
        eval_batches=1, coupling_batches=2, layouts=((2, 1), (2, 2)), pre_unroll_steps=2,
        heal_steps=2, mtp_heads=2, mtp_steps=3, decode_prompts=1, decode_tokens=8,
        decode_reps=2, moee_steps=2, seeds=1,
    ),
    "cpu": Budget(
        "cpu", pretrain_steps=600, steps=60, batch_size=4, seq_len=256, learning_rate=1e-4,
        eval_batches=16, coupling_batches=4, layouts=((2, 1), (2, 2), (3, 3), (5, 5), (5, 8)),
        pre_unroll_steps=20, heal_steps=60, mtp_heads=3, mtp_steps=150, decode_prompts=4,
        decode_tokens=64, decode_reps=3, moee_steps=40, seeds=2,
    ),
    "paper": Budget(
        "paper", pretrain_steps=3000, steps=500, batch_size=16, seq_len=512, learning_rate=1e-4,
        eval_batches=-1, coupling_batches=8,
        layouts=((2, 1), (2, 2), (3, 3), (4, 4), (6, 6), (8, 8)), pre_unroll_steps=100,
        heal_steps=500, mtp_heads=3, mtp_steps=500, decode_prompts=16, decode_tokens=128,
        decode_reps=3, moee_steps=500, seeds=3,
    ),
}  # fmt: skip


@dataclass
class ReproConfig:
    """Settings of ``cherry-mlx repro`` (its options are generated from these fields)."""

    model: str = setting(
        TINY_PRESET,
        "Source model (dir, run or preset); a preset without weights is first trained from "
        "scratch with the full loss (the budget's pretrain steps).",
    )
    budget: str = setting("tiny", f"Experiment size: one of {', '.join(BUDGETS)}.")
    only: Optional[str] = setting(
        None, f"Comma-separated stages to run (default all): {','.join(registry.names())}."
    )
    seeds: Optional[int] = setting(
        None, "Seeds per arm (default: the budget's; >= 2 for verdicts)."
    )
    out: Optional[str] = setting(
        None, "Output directory (default runs/repro-BUDGET); rerun to resume.", "--out", "-o"
    )
    data: Optional[str] = setting(None, "Chat data directory (default: the bundled data).")
    set: Optional[str] = setting(
        None,
        "Override budget fields for a smaller or larger run, e.g. steps=20,seq_len=128 "
        "(each stage records the settings it ran with; the report lists them).",
    )
    redo: Optional[str] = setting(
        None,
        "Comma-separated finished stages to run again (e.g. with other --set values); the "
        "earlier result is kept as results/STAGE.json.prev. Each run given it redoes them: "
        "resume a killed --redo run without it.",
    )

    report_only: bool = setting(
        False,
        "Run nothing: rewrite report.md, the plots and results.json of -o DIR from the stage "
        "results there, verdicts derived again by the current rule.",
    )
    force: bool = setting(
        False,
        "Write into a non-empty -o that holds no repro, adding repro's files beside the ones "
        "there (never replacing any of them).",
    )

    def __post_init__(self):
        """Every option checked before any work: a typo is one line, not a run that fails late."""
        if self.budget not in BUDGETS:
            raise ValueError(f"--budget {self.budget!r}: use one of {', '.join(BUDGETS)}")
        known = registry.names()
        for opt, value in (("--only", self.only), ("--redo", self.redo)):
            names = _items(value)
            if value is not None and not names:
                raise ValueError(f"{opt} {value!r}: names no stage; use some of {','.join(known)}")
            bad = [s for s in names if s not in known]
            if bad:
                raise ValueError(
                    f"{opt} {','.join(bad)}: unknown stage; use some of {','.join(known)}"
                )
        skipped = [s for s in self.redo_stages if self.only and s not in self.stages]
        if skipped:
            raise ValueError(f"--redo {','.join(skipped)}: not among the stages to run; add it "
                             f"to --only")  # fmt: skip
        if self.set is not None and not _items(self.set):
            raise ValueError(f"--set {self.set!r}: give NAME=VALUE pairs, e.g. steps=20")
        self.overrides  # parse now: a typo is an error before any work
        if self.seeds is not None and self.seeds < 1:
            raise ValueError(f"--seeds {self.seeds}: must be >= 1")

    @property
    def stages(self) -> Tuple[str, ...]:
        """The stages to run: ``--only``'s in the order given, else every stage in run order."""
        if not self.only:
            return tuple(s.name for s in registry.stages())
        return tuple(dict.fromkeys(_items(self.only)))

    @property
    def redo_stages(self) -> Tuple[str, ...]:
        return tuple(dict.fromkeys(_items(self.redo)))

    @property
    def overrides(self) -> Dict[str, int | float]:
        """``--set k=v,...`` as typed budget fields and stage knobs (ints stay ints, the learning
        rate a float)."""
        kinds = {f.name: f.type for f in fields(Budget) if f.name not in ("name", "layouts")}
        out: Dict[str, int | float] = {}
        for item in _items(self.set):
            key, eq, val = item.partition("=")
            key = key.strip()
            kind = kinds.get(key) or _knob_kind(key) if eq else None
            if kind is None:
                raise ValueError(f"--set {item!r}: use NAME=VALUE with NAME one of "
                                 f"{', '.join([*kinds, *_knob_kinds()])}")  # fmt: skip
            try:
                num = float(val) if kind == "float" else int(val)
            except ValueError:
                what = "a number" if kind == "float" else "an integer"
                raise ValueError(f"--set {item!r}: {key} takes {what}") from None
            if not (math.isfinite(num) and num > 0) and not (key == "eval_batches" and num == -1):
                raise ValueError(f"--set {item!r}: {key} must be positive")
            out[key] = num
        return out

    @property
    def spec(self) -> Budget:
        shared = {k: v for k, v in self.overrides.items() if k in _BUDGET_FIELDS}
        return replace(BUDGETS[self.budget], **shared)

    def knobs(self, stage: str) -> Dict[str, int | float]:
        """A stage's own budget knobs at this budget, with ``--set`` applied."""
        own = {k: v.get(self.budget) for k, v in registry.get(stage).knobs.items()}
        missing = [k for k, v in own.items() if v is None]
        if missing:
            raise ValueError(
                f"stage {stage}: knob {', '.join(missing)} has no value for the {self.budget} "
                f"budget; give one per budget ({', '.join(BUDGETS)})"
            )
        return {**own, **{k: v for k, v in self.overrides.items() if k in own}}

    @property
    def n_seeds(self) -> int:
        return self.seeds if self.seeds is not None else self.spec.seeds


_BUDGET_FIELDS = frozenset(f.name for f in fields(Budget))


def _items(value: Optional[str]) -> Tuple[str, ...]:
    return tuple(s.strip() for s in str(value or "").split(",") if s.strip())


def _knob_kinds() -> Dict[str, str]:
    """Budget knobs the stages declare themselves (imports the stage modules: only reached for a
    ``--set`` name that is no shared Budget field)."""
    out = {}
    for st in registry.stages():
        for name, per_budget in st.knobs.items():
            out[name] = "float" if any(isinstance(v, float) for v in per_budget.values()) else "int"
    return out


def _knob_kind(key: str) -> Optional[str]:
    return _knob_kinds().get(key)
