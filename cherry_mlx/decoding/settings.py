"""Settings of ``cherry-mlx generate`` and ``chat``, and how the next token is chosen (no MLX
here: the CLI builds its options from these fields)."""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field
from typing import Optional

from cherry_mlx._settings import setting

MODEL_HELP = "Model directory, run, preset or hub id (default: the latest run under runs/)."


@dataclass
class SamplingConfig:
    """How the next token is chosen (the same for plain and speculative decoding)."""

    temp: float = setting(0.0, "Sampling temperature (0 = greedy).")
    top_p: float = setting(1.0, "Nucleus sampling mass kept (1 = off).")
    top_k: int = setting(0, "Sample among the k most likely tokens (0 = off).")
    min_p: float = setting(0.0, "Min-p filter (0 = off).")
    repetition_penalty: float = setting(1.0, "CTRL-style penalty on the last 20 tokens (1 = off).")
    repetition_context: int = 20
    # ids at or above this are never chosen (the tokenizer's size when the model's vocabulary is
    # padded past it: such ids have no text); set by the serving code, not an option
    vocab_limit: Optional[int] = None

    def __post_init__(self):
        for name in ("temp", "top_p", "min_p", "repetition_penalty"):
            value = getattr(self, name)
            if not math.isfinite(value):
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} {value}: not a finite number; give a real one")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"--min-p {self.min_p} must be in [0, 1] (0 = off)")
        if self.temp < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temp}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"--top-k {self.top_k} must be >= 0 (0 = off)")
        if self.repetition_penalty <= 0:
            raise ValueError(
                f"--repetition-penalty {self.repetition_penalty} must be > 0 (1 = off)"
            )

    @property
    def greedy(self) -> bool:
        return self.temp == 0


def _speculative():
    return setting(
        None,
        "Self-speculative decoding with the MTP heads (default: on when the model has them).",
    )


def _num_draft():
    return setting(None, "Heads used to draft (default: all).")


def _seed():
    return setting(None, "Random seed for sampling.", at_least=0)


@dataclass
class GenerateConfig:
    """Generate a completion for one prompt, streaming, then print speed (and acceptance)."""

    prompt: str = setting(MISSING, "Prompt text ('-' reads stdin).", short="-p")
    model: Optional[str] = setting(None, MODEL_HELP, argument=True)
    max_tokens: int = setting(256, "Tokens to generate.", short="-m")
    speculative: Optional[bool] = _speculative()
    num_draft: Optional[int] = _num_draft()
    raw: bool = setting(False, "Do not apply the chat template.")
    seed: Optional[int] = _seed()
    sampling: SamplingConfig = field(default_factory=SamplingConfig)


@dataclass
class ChatConfig:
    """Interactive chat with the model's chat template; the KV cache is kept across turns.

    Commands: /reset (new conversation), /stats (tokens/s, acceptance), /quit. Ctrl-C stops an
    answer, Ctrl-D or /quit leaves.
    """

    model: Optional[str] = setting(None, MODEL_HELP, argument=True)
    system: Optional[str] = setting(None, "System prompt.")
    max_tokens: int = setting(512, "Tokens per answer.", short="-m")
    speculative: Optional[bool] = _speculative()
    num_draft: Optional[int] = _num_draft()
    seed: Optional[int] = _seed()
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
