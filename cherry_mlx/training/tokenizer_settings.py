"""Settings of the ``cherry-mlx tokenizer`` commands (no MLX: the CLI builds its options from
these fields). Here, not in ``tokenizer/``, because training a tokenizer reads the data corpora and
refuses to overwrite models: work of the layers above ``tokenizer/``."""

from __future__ import annotations

from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import List, Optional

from cherry_mlx._settings import setting
from cherry_mlx.models.presets import DEFAULT_PRESET


@dataclass
class TokenizerTrainConfig:
    """Train a BPE tokenizer and write it in the Hugging Face layout (mlx-lm loads it).

    Example: cherry-mlx tokenizer train --vocab-size 4096 -o weights/cherry-tiny --force
    """

    data: Optional[List[Path]] = setting(
        None,
        "Corpus file (.jsonl in any data shape, or .txt); repeat for several (default: the "
        "bundled data set and prose corpora of cherry-mlx data build).",
        short="-d",
    )
    vocab_size: int = setting(4096, "Total vocabulary size.")
    out: str = setting("runs/tokenizer", "Output directory.", short="-o")
    builtin_english: Optional[bool] = setting(
        None, "Add CPython's pydoc English prose (default: only when there is no other corpus)."
    )
    required_hangul: bool = setting(
        True, "Force the 2,350 KS X 1001 syllables into the vocabulary."
    )
    model_max_length: Optional[int] = setting(None, "Context length recorded with it.")
    force: bool = setting(
        False,
        "Write into a non-empty -o (e.g. a preset), replacing only the tokenizer files (never "
        "into a trained model: its token ids would no longer match).",
    )


@dataclass
class EncodeConfig:
    """Show the pieces and ids of TEXT.

    Example: cherry-mlx tokenizer encode '<|spartan_think|>서울은 수도'
    """

    text: str = setting(MISSING, "Text to encode (special tokens are recognised).", argument=True)
    tokenizer: str = setting(
        DEFAULT_PRESET, "Preset, model/tokenizer directory or run.", short="-t"
    )


@dataclass
class SpecialsConfig:
    """List the 24 governance special tokens with their ids and purpose."""
