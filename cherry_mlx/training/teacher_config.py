"""Settings of ``cherry-mlx teacher build`` (no MLX: the CLI builds its options from them)."""

from __future__ import annotations

from dataclasses import MISSING, dataclass
from typing import List, Optional

from cherry_mlx._settings import setting
from cherry_mlx.training.values import check_fields

ORIGINS = ("text", "generate")


@dataclass
class TeacherConfig:
    """Run a source model over text once and cache its top-k logits (and optionally hidden
    states) for distillation: healing a compressed model, MTP heads, quantisation.

    Example: cherry-mlx teacher build runs/imported/smollm2-135m -o runs/teacher-smollm2 --origin
    text --data prose-en --hidden-layers all
    """

    model: str = setting(MISSING, "The source (teacher) model dir, run or preset.", argument=True)
    out: str = setting(MISSING, "Cache directory (resumed when it holds this build).", short="-o")
    origin: str = setting(
        "text",
        "text: teacher-forced over --data; generate: the model's own answers sampled from "
        "--data's prompts (mlx-lm batched generation), then cached.",
    )
    data: str = setting(
        "prose-en",
        "prose-en / prose-ko (bundled prose), a data dir (its train.jsonl), or a .jsonl file "
        "of {text}, {messages} or {prompt} rows.",
    )
    k: int = setting(32, "Logits kept per position (largest first).", at_least=1, at_most=4096)
    seq_len: int = setting(256, "Tokens per cached row.", at_least=8)
    rows_per_shard: int = setting(64, "Rows written per shard (the unit of resume).", at_least=1)
    batch_size: int = setting(8, "Rows per teacher forward (and prompts per generation batch).",
                              at_least=1)  # fmt: skip
    max_rows: int = setting(0, "Stop after this many rows (0: all the text).", at_least=0)
    hidden_layers: str = setting(
        "",
        "Also cache the residual stream entering these blocks (fp16), e.g. 0,15,30, all, or "
        "last (layer N = after the last block, what MTP heads need); empty: none.",
    )
    max_new_tokens: int = setting(128, "Generated tokens per prompt (--origin generate).",
                                  at_least=1)  # fmt: skip
    temperature: float = setting(0.7, "Sampling temperature (--origin generate).", at_least=0.0)
    top_p: float = setting(0.95, "Nucleus sampling mass (--origin generate).", at_least=0.0,
                           at_most=1.0)  # fmt: skip
    stop_at_eos: bool = setting(
        True,
        "End a generated reply at an end-of-turn token (--no-stop-at-eos: always "
        "--max-new-tokens, so MTP heads also see what a decoder runs past the end).",
    )
    seed: int = setting(0, "Sampling seed (shard i uses seed + i).")

    def __post_init__(self):
        check_fields(self)
        if self.origin not in ORIGINS:
            raise ValueError(f"--origin {self.origin!r}: use one of {', '.join(ORIGINS)}")


def parse_layers(text: str, depth: int) -> List[int]:
    """``"all"`` -> 0..depth, ``"last"`` -> [depth], ``"0,15,30"`` -> [0, 15, 30], empty -> [];
    one-line errors."""
    text = (text or "").strip()
    if not text:
        return []
    if text == "all":
        return list(range(depth + 1))
    if text == "last":
        return [depth]
    try:
        layers = sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise ValueError(
            f"--hidden-layers {text!r}: write indices like 0,15,30, all or last"
        ) from None
    if layers and (layers[0] < 0 or layers[-1] > depth):
        raise ValueError(f"--hidden-layers {text!r}: indices must lie in 0..{depth}")
    return layers


def sampling_of(cfg: TeacherConfig) -> Optional[dict]:
    if cfg.origin != "generate":
        return None
    return {"temperature": cfg.temperature, "top_p": cfg.top_p,
            "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed,
            "stop_at_eos": cfg.stop_at_eos}  # fmt: skip
