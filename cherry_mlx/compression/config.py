"""Settings of ``cherry-mlx compress``, ``plan`` and ``upscale`` (no MLX: the CLI builds its
options from them)."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from typing import Any, ClassVar, Dict, Optional, Tuple

from cherry_mlx.training.config import TrainConfig, setting
from cherry_mlx.training.phase import PhaseConfig
from cherry_mlx.training.values import check_fields

METHODS = ("average", "prune-bi", "prune-angular", "prune-loop")
HEALS = ("sgt", "distill")
RECIPES = ("auto", "distill", "paper")


@dataclass
class CompressConfig(PhaseConfig):
    """Merge adjacent layers, unroll a weight-tied core and heal with SGT.

    Example: cherry-mlx compress runs/my-run --to 6L --loops 8 --pre-unroll-steps 100
    --heal-steps 500 (48 layers -> 6 unique, P1 C4 Q1 looped 8x = 34 effective layers).
    """

    # healing trains with the nested ``train`` settings

    TRAIN_OPTIONS: ClassVar[Tuple[str, ...]] = (
        "data", "tokenizer", "batch_size", "seq_len", "learning_rate", "warmup", "lam",
        "select", "seed", "eval_batches", "grad_checkpoint", "optimizer",
    )  # fmt: skip
    TRAIN_DEFAULTS: ClassVar[Dict[str, Any]] = dict(
        batch_size=16, seq_len=256, learning_rate=1e-3, warmup=10, eval_every=0,
        eval_batches=-1, demo=False,
    )  # fmt: skip

    model: Optional[str] = setting(
        None, "Model dir, run or preset (default: the latest run).", argument=True
    )
    sweep: bool = setting(False, "Sweep unique layers x loops (Tables 5, C.2).")
    sweep_to: Optional[str] = setting(
        None, "Sweep unique depths, e.g. 4,2 (default: the divisors of the depth)."
    )
    sweep_loops: str = setting("1,2,4", "Sweep loop counts, e.g. 1,2,4,8.")
    analyze: bool = setting(False, "Only print layer redundancy diagnostics.")
    out: Optional[str] = setting(
        None, "Output dir (default: runs/SOURCE-LABEL).", "--out", short="-o"
    )
    to: Optional[str] = setting(None, "Unique layers after merging, e.g. 6L.")
    factor: Optional[int] = setting(None, "Or: merge every r adjacent layers.", at_least=1)
    groups: Optional[str] = setting(
        None, "Or: explicit grouping, sizes 3,3,2 or ranges 0-2,3-5,6-7."
    )
    recipe: str = setting(
        "auto",
        "distill: heal from the source's own cached signal, dropping layers by block influence "
        "(prune-bi; prune-loop for a looped core); paper: uniform averaging healed with SGT; "
        "auto: distill without loops, paper with loops (what measured best on SmolLM2-135M at "
        "equal healing steps). --method/--heal-with override.",
    )
    method: Optional[str] = setting(
        None,
        "How depth is removed: average (each group averaged, the paper), prune-bi (drop the "
        "lowest block-influence layers, ShortGPT) or prune-angular (drop the contiguous block "
        "with the smallest angular distance, Gromov et al.) or prune-loop (keep the first, last "
        "and most influential layers, for a looped core; --heal-with distill). Default: from "
        "--recipe.",
    )
    loops: int = setting(1, "Core loops after merging (1 = no recurrence).", at_least=1)
    prelude: Optional[int] = setting(
        None, "Unique layers before the looped core (default: 1).", at_least=0
    )
    coda: Optional[int] = setting(
        None, "Unique layers after the looped core (default: 1).", at_least=0
    )
    layout: Optional[str] = setting(
        None, "Prelude,core,coda at once, e.g. 4,16,4 (alone it also sets --to P+C+Q)."
    )
    heal: bool = setting(True, "Heal (else merge+unroll only).")
    heal_with: Optional[str] = setting(
        None,
        "sgt: the paper's SGT cross-entropy on --data; distill: block-local matching of the "
        "source's hidden states (--local-steps), then KL to its cached top-k logits "
        "(--heal-steps), from --teacher-cache. Default: from --recipe.",
    )
    teacher_cache: Optional[str] = setting(
        None,
        "Teacher cache for --heal-with distill (default: built into OUT/teacher-cache from the "
        "bundled English prose, hidden states of every layer).",
    )
    grouping: str = setting(
        "uniform",
        "Which adjacent layers merge (--heal-with distill): uniform (the paper) or similarity "
        "(where the source's residual stream turns least, on cached calibration rows).",
    )
    init: str = setting(
        "average",
        "A merged layer starts as the average of its group (the paper) or best: its most "
        "influential member (--heal-with distill).",
    )
    local_steps: int = setting(
        40, "Block-local healing steps before end-to-end distillation.", at_least=0
    )
    temperature: float = setting(1.0, "Distillation temperature.", at_least=0.05)
    distill_lr: float = setting(
        2e-4,
        "Learning rate of end-to-end distillation (SGT healing uses --learning-rate).",
        at_least=0.0,
    )
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
        if self.recipe not in RECIPES:
            raise ValueError(f"--recipe {self.recipe!r}: use one of {', '.join(RECIPES)}")
        looped_auto = self.recipe == "auto" and self.loops > 1
        paper = self.recipe == "paper" or looped_auto or self.sweep  # the sweep heals with SGT
        if self.heal_with is None:
            self.heal_with = "sgt" if paper else "distill"
        if self.method is None:
            pruned = "prune-loop" if self.loops > 1 else "prune-bi"
            self.method = pruned if self.heal_with == "distill" else "average"
        if self.method not in METHODS:
            raise ValueError(f"--method {self.method!r}: use one of {', '.join(METHODS)}")
        if self.heal_with not in HEALS:
            raise ValueError(f"--heal-with {self.heal_with!r}: use one of {', '.join(HEALS)}")
        if self.grouping not in ("uniform", "similarity"):
            raise ValueError(f"--grouping {self.grouping!r}: use uniform or similarity")
        if self.init not in ("average", "best"):
            raise ValueError(f"--init {self.init!r}: use average or best")
        distill_only = self.method == "prune-loop" or self.grouping != "uniform"
        if self.heal_with == "sgt" and (distill_only or self.init != "average"):
            raise ValueError(
                "--method prune-loop, --grouping similarity and --init best need "
                "--heal-with distill (they read the teacher cache's hidden states)"
            )
        if self.heal_with == "distill" and self.method == "prune-angular":
            raise ValueError("--method prune-angular heals with sgt only; use prune-bi or "
                             "prune-loop with --heal-with distill")  # fmt: skip
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
        tag += "-distill" if self.heal_with == "distill" else ""
        return f"{what}x{self.loops}{tag}".replace(",", "_")


@dataclass
class PlanConfig:
    """Plan a compression without weights: parameters, depth and memory of a model and its
    compressed versions from config.json alone (paper Tables 8 and 15).

    Example: cherry-mlx plan ./GLM-5 --to 6L --loops 8 --quant nvfp4
    """

    config: str = setting(
        MISSING,
        "config.json, a directory holding one (e.g. a downloaded hub snapshot), or a preset.",
        argument=True,
    )
    to: Optional[str] = setting(None, "Unique layers after merging, e.g. 6L.")
    loops: int = setting(1, "Core loops after merging.", at_least=1)
    prelude: Optional[int] = setting(None, "Layers before the core (default: 1).", at_least=0)
    coda: Optional[int] = setting(None, "Layers after the core (default: 1).", at_least=0)
    layout: Optional[str] = setting(None, "Prelude,core,coda at once, e.g. 1,4,1.")
    quant: Optional[str] = setting(
        None, "Show one format: fp32, bf16, 8-bit or nvfp4 (default: all)."
    )
    context: int = setting(4096, "Tokens of KV cache to size.", at_least=1)
    json_out: bool = setting(False, "Print the rows as JSON.", flag="--json")

    def __post_init__(self):
        check_fields(self)
        if self.layout is not None and (self.prelude is not None or self.coda is not None):
            raise ValueError("give --layout P,C,Q or --prelude/--coda, not both")
        if self.layout is not None and self.to is None:
            self.to = f"{sum(parse_layout(self.layout))}L"
        if self.to is None and (
            self.loops > 1 or self.prelude is not None or self.coda is not None
        ):
            raise ValueError(
                "--loops/--prelude/--coda plan the merged model: give --to too (e.g. --to 6L)"
            )


@dataclass
class UpscaleConfig:
    """Depth up-scaling (SOLAR DUS): two copies of the stack, overlap dropped or duplicated."""

    model: str = setting(MISSING, "Model dir, run or preset to deepen.", argument=True)
    to: str = setting(MISSING, "Target depth, N < target <= 2N (e.g. 48L).")
    overlap: str = setting(
        "drop", "drop: SOLAR, cut the seam; duplicate: keep copy A whole, repeat the top."
    )
    out: Optional[str] = setting(None, "Output dir (default: runs/SOURCE-dusNL).", short="-o")
    force: bool = setting(
        False,
        "Write into a non-empty -o, replacing only the files this command writes (never the "
        "source, a run, or other files).",
    )


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
