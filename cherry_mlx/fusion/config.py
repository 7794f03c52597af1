"""Settings of ``cherry-mlx fuse`` and ``distill`` (no MLX: the CLI builds its options from
them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Tuple

from cherry_mlx.training.config import TrainConfig, setting
from cherry_mlx.training.phase import PhaseConfig


@dataclass
class FuseConfig(PhaseConfig):
    """Settings of ``cherry-mlx fuse``; the router trains with the nested ``train`` settings."""

    TRAIN_OPTIONS: ClassVar[Tuple[str, ...]] = (
        "batch_size", "seq_len", "learning_rate", "lam", "data", "tokenizer", "name", "runs_dir",
        "eval_every", "seed",
    )  # fmt: skip
    TRAIN_DEFAULTS: ClassVar[Dict[str, Any]] = dict(
        batch_size=8, seq_len=256, learning_rate=1e-3, warmup=10, eval_every=0, demo=False,
    )  # fmt: skip

    experts: List[str] = setting([], "Expert models (dirs, runs or presets).")
    out: Optional[str] = setting(
        None, "Fused model directory (default runs/NAME/fused).", "--out", short="-o"
    )
    granularity: str = setting(
        "model", "model: whole experts (paper); layer: routed FFNs, shared attention."
    )
    top_k: int = setting(1, "Experts mixed per token (Eq. 10).", at_least=1)
    shared: bool = setting(True, "One shared (averaged) embedding and LM head.")
    mtp_heads: int = setting(0, "MTP heads to add (needs --shared).", at_least=0)
    balance: float = setting(0.01, "α of the load-balancing loss α·N·Σ f_i·P_i.", at_least=0)
    mtp_weight: float = setting(0.3, "β of the MTP loss.", at_least=0)
    sgt: bool = setting(True, "SGT loss (off: plain cross-entropy, the ablation's first rung).")
    train_experts: bool = setting(False, "Train the experts too (default: gate + heads).")
    steps: int = setting(100, "Training steps (0 = assemble only).", at_least=0)
    force: bool = setting(
        False, "Write into a non-empty --out, replacing only what fuse writes there."
    )
    train: TrainConfig = field(default_factory=lambda: FuseConfig.default_train())


@dataclass
class DistillConfig(PhaseConfig):
    """Settings of ``cherry-mlx distill``; the student trains with the nested ``train`` settings."""

    TRAIN_OPTIONS: ClassVar[Tuple[str, ...]] = (
        "lam", "steps", "batch_size", "seq_len", "learning_rate", "eval_every", "data", "name",
        "runs_dir", "seed",
    )  # fmt: skip
    TRAIN_DEFAULTS: ClassVar[Dict[str, Any]] = dict(
        steps=100, batch_size=8, seq_len=256, learning_rate=1e-3, warmup=10, eval_every=25,
        demo=False,
    )  # fmt: skip

    teacher: str = setting("", "Frozen teacher model.")
    student: str = setting("", "Student model to train.")
    positions: str = setting("gt", "gt: Eq. 11 at GT positions; all: every response position.")
    teacher_quant: str = setting("none", "Quantise the teacher: none, nvfp4, mxfp4, affine.")
    beta: float = setting(1.0, "Weight of the KL sum next to the SGT loss.", at_least=0)
    temperature: float = setting(
        1.0,
        "Distillation temperature T: KL of softmax(logits/T), scaled by T² (1 = Eq. 11).",
        at_least=1e-6,
    )
    train: TrainConfig = field(default_factory=lambda: DistillConfig.default_train())
