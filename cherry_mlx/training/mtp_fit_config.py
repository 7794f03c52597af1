"""Settings of ``cherry-mlx train-mtp`` (no MLX: the CLI builds its options from them)."""

from __future__ import annotations

from dataclasses import MISSING, dataclass
from typing import Optional

from cherry_mlx._settings import setting
from cherry_mlx.training.values import check_fields


@dataclass
class TrainMTPConfig:
    """Fit MTP heads on a frozen model from a teacher cache of its own replies (EAGLE-3's
    recipe: no trunk forward per step), then save the model with the heads for self-speculative
    decoding. The cache is the one `teacher build` writes; without --teacher-cache one is built
    into OUT/teacher-cache from --data's prompts (greedy replies, the last layer's states).

    Example: cherry-mlx teacher build runs/imported/smollm2-135m -o runs/teacher-gen --origin
    generate --data weights/data/default --hidden-layers last --temperature 0 --no-stop-at-eos;
    cherry-mlx train-mtp runs/imported/smollm2-135m --teacher-cache runs/teacher-gen -o
    runs/smollm2-mtp
    """

    model: str = setting(MISSING, "The trunk: model dir, run or preset.", argument=True)
    out: str = setting(MISSING, "Output model dir (the trunk with its heads).", short="-o")
    teacher_cache: Optional[str] = setting(
        None,
        "Teacher cache of this model with the last layer's states (teacher build --hidden-layers "
        "last; best --origin generate); default: built into OUT/teacher-cache.",
    )
    data: Optional[str] = setting(
        None, "Prompts for a cache built here: a data dir or .jsonl (default: the bundled data)."
    )
    prompts: int = setting(256, "Prompts answered for a cache built here.", at_least=1)
    max_new_tokens: int = setting(128, "Reply tokens per prompt for a cache built here.",
                                  at_least=1)  # fmt: skip
    heads: int = setting(3, "MTP heads (each drafts one more token).", at_least=1, at_most=8)
    steps: int = setting(1000, "Head training steps.", at_least=1)
    batch_size: int = setting(16, "Cached sequences per step.", at_least=1)
    learning_rate: float = setting(1e-3, "Peak learning rate (warm-up, then cosine).",
                                   at_least=0.0)  # fmt: skip
    feature_weight: float = setting(1.0, "Weight of the head-state regression (EAGLE).",
                                    at_least=0.0)  # fmt: skip
    draft_vocab: int = setting(4096, "Draft vocabulary: the trunk's N most used reply tokens "
                               "(0 = the full vocabulary).", at_least=0)  # fmt: skip
    seed: int = setting(0, "Seed of the heads, batches and held-back rows.")
    force: bool = setting(
        False, "Write into a non-empty -o (to resume an interrupted run: the cache and the head "
        "state in it go on where they stopped)."
    )  # fmt: skip

    def __post_init__(self):
        check_fields(self)
