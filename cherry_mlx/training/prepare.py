"""One place that finds the tokenizer and loads the data splits, for every phase.

Training, healing (compress), fusion, distillation, evaluation and quantisation all need the same
two things: the tokenizer that matches the model's ids, and the encoded train/valid splits. The
search order is the same everywhere: an explicit ``--tokenizer``, then the model(s) being trained
(a run directory's own ``tokenizer/`` copy included), then the default preset's.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from mlx_lm.utils import load_tokenizer as mlx_lm_load_tokenizer

from cherry_mlx.models.loading import DEFAULT_PRESET, WEIGHTS_DIR, load_tokenizer, resolve
from cherry_mlx.training.data import load_splits


def has_tokenizer(path: Path) -> bool:
    return (Path(path) / "tokenizer.json").is_file() or (Path(path) / "tokenizer.model").is_file()


def find_tokenizer(
    explicit: Optional[str] = None,
    candidates: Sequence[Optional[str]] = (),
    default: Optional[str] = DEFAULT_PRESET,
) -> Optional[Path]:
    """The directory whose tokenizer files a phase uses (None when nothing has any).

    ``explicit`` must have a tokenizer (a tokenizer-only folder from ``tokenizer train -o``, a
    model, a run or a run's ``tokenizer/`` copy) or this is an error; ``candidates`` (the models
    of the phase) and ``default`` are tried in order and skipped when they have none.
    """
    if explicit:
        direct = Path(explicit).expanduser()
        for cand in (direct, direct / "tokenizer"):
            if cand.is_dir() and has_tokenizer(cand):
                return cand
        try:
            path = resolve(explicit)
        except ValueError as err:
            raise FileNotFoundError(
                f"--tokenizer {explicit}: {err}; pass a folder with tokenizer.json or "
                "tokenizer.model (e.g. from `cherry-mlx tokenizer train -o DIR`)"
            ) from None
        if not has_tokenizer(path):
            raise FileNotFoundError(f"--tokenizer {explicit}: {path} has no tokenizer files")
        return path
    for cand in [*candidates, default]:
        if not cand:
            continue
        direct = Path(cand).expanduser()
        if direct.is_dir() and has_tokenizer(direct):
            return direct
        try:
            path = resolve(cand)
        except ValueError:
            continue
        if has_tokenizer(path):
            return path
    return None


def open_tokenizer(path: Path):
    """mlx-lm's TokenizerWrapper for a model directory or a tokenizer-only folder."""
    path = Path(path)
    if (path / "config.json").is_file():
        return load_tokenizer(path)
    return mlx_lm_load_tokenizer(path)


@dataclass
class Prepared:
    """What a phase trains and evaluates on."""

    tokenizer: Any
    tokenizer_dir: Optional[Path]
    splits: Dict[str, Any] = field(default_factory=dict)

    @property
    def train(self):
        return self.splits.get("train")

    @property
    def valid(self):
        return self.splits.get("valid")


def check_vocab(tokenizer, where, vocab_size: int) -> None:
    """A tokenizer with more ids than the model's embedding rows would index past the table
    (NaN losses, a model saved with the wrong tokenizer): fail before any work, naming both."""
    if tokenizer is None or not vocab_size:
        return
    try:
        n = len(getattr(tokenizer, "_tokenizer", tokenizer))
    except TypeError:
        return
    if n > int(vocab_size):
        raise ValueError(
            f"tokenizer {where} has {n:,} tokens but the model has vocab_size {int(vocab_size):,}:"
            f" pass --tokenizer with the model's own tokenizer (at most {int(vocab_size):,} ids)"
        )


def require_tokenizer(tokenizer_dir: Optional[Path]) -> Path:
    if tokenizer_dir is None:
        raise FileNotFoundError(
            f"no tokenizer to encode the data: pass --tokenizer DIR (the model has no tokenizer "
            f"files, nor has {WEIGHTS_DIR / DEFAULT_PRESET})"
        )
    return tokenizer_dir


def prepare(
    data: Optional[str],
    seq_len: int,
    tokenizer: Optional[str] = None,
    models: Sequence[Optional[str]] = (),
    tokenizer_obj=None,
    tokenizer_dir: Optional[Path] = None,
    verbose: bool = True,
    check: Optional[Callable[[Any], None]] = None,
) -> Prepared:
    """Find and load the tokenizer (unless given) and encode the data splits of ``data``;
    ``check(tokenizer)`` runs before any encoding (e.g. its size against the model's vocabulary)."""
    if tokenizer_dir is None and tokenizer_obj is None:
        tokenizer_dir = find_tokenizer(tokenizer, models)
    if tokenizer_obj is None:
        tokenizer_obj = open_tokenizer(require_tokenizer(tokenizer_dir))
    if check is not None:
        check(tokenizer_obj)
    splits = load_splits(data, tokenizer_obj, seq_len)
    if verbose:
        print_data_summary(splits)
    return Prepared(tokenizer_obj, tokenizer_dir, splits)


def print_data_summary(splits) -> None:
    """Say what was loaded, and how many examples were truncated or dropped (never silently)."""
    for name in ("train", "valid"):
        stats = splits.get(f"{name}_stats")
        if stats is not None:
            text = stats.summary().replace("\n", "\n  ")
            print(f"[data] {name} ({splits['data_dir']}):\n  {text}", file=sys.stderr)
    if splits.get("valid_stats") is None:
        print(
            f"[data] no valid.jsonl: holding out {len(splits['valid'])} train examples",
            file=sys.stderr,
        )
