"""Settings of ``cherry-mlx fuse``, ``distill`` and ``cabstractor train`` (no MLX: the CLI builds
its options from them)."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Tuple

from cherry_mlx.training.config import TrainConfig, setting
from cherry_mlx.training.phase import PhaseConfig
from cherry_mlx.training.values import check_fields


@dataclass
class FuseConfig(PhaseConfig):
    """Assemble compressed experts behind a learned top-k gate and train it with SGT."""

    # the router trains with the nested ``train`` settings

    TRAIN_OPTIONS: ClassVar[Tuple[str, ...]] = (
        "batch_size", "seq_len", "learning_rate", "lam", "data", "tokenizer", "name", "runs_dir",
        "eval_every", "seed", "grad_checkpoint", "optimizer",
    )  # fmt: skip
    TRAIN_DEFAULTS: ClassVar[Dict[str, Any]] = dict(
        batch_size=8, seq_len=256, learning_rate=1e-3, warmup=10, eval_every=0, demo=False,
    )  # fmt: skip

    experts: List[str] = setting(MISSING, "Expert models (dirs, runs or presets).", argument=True)
    ablate: bool = setting(False, "Run the Table 7 ladder (alone, +SGT, +MTP, +balance).")
    out: Optional[str] = setting(
        None, "Fused model directory (default: runs/NAME/fused).", "--out", short="-o"
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
    """Distil a frozen (optionally NVFP4) teacher into a student at GT positions (Eq. 11)."""

    # the student trains with the nested ``train`` settings

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


@dataclass
class CabTrainConfig:
    """Train the Cabstractor (paper Section 5.4) so the frozen LM says each example's text after
    the soft tokens."""

    features_dir: str = setting(
        MISSING,
        "Directory with texts.jsonl and one ID.npy or ID.safetensors per example.",
        argument=True,
    )
    model: str = setting("cherry-tiny", "The frozen LM (model dir, run or preset).")
    out: Optional[str] = setting(
        None, "Output dir (default: runs/cabstractor-FEATURES_DIR).", short="-o"
    )
    steps: int = setting(300, "Training steps.", at_least=1)
    batch_size: int = setting(16, "Examples per step.", at_least=1)
    learning_rate: float = setting(1e-3, "AdamW learning rate.")
    num_queries: int = setting(81, "Learned queries = soft tokens given to the LM.", at_least=1)
    num_layers: int = setting(3, "Cross-attention layers.", at_least=1)
    num_heads: int = setting(8, "Attention heads.", at_least=1)
    dims: int = setting(0, "Width (0: the LM's hidden size, at most 1024).", at_least=0)
    valid_fraction: float = setting(
        0.1, "Share of examples held out for evaluation.", at_least=0, at_most=1
    )
    seed: int = setting(0, "Seed of initialisation and data order.", at_least=0)
    force: bool = setting(False, "Write into a non-empty -o, replacing only the cabstractor files.")

    def __post_init__(self):
        check_fields(self)
