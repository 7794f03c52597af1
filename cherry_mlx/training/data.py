"""Data for the trainer: read and encode splits, iterate batches, fix shapes for the compiled step.

Batches follow the contract in ``selection/losses.py``. Before a batch reaches the compiled step it
is padded to a multiple of ``PAD_T`` positions (so the step compiles for a handful of shapes, not
one per batch) and, for losses that say which positions they read (``loss_fn.needed``), given
``pos``/``pos_valid``: the flat indices of those positions padded to a bucket size, so logits are
computed there only.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Tuple

import mlx.core as mx
import numpy as np

from cherry_mlx.data.batching import BatchIterator
from cherry_mlx.data.encode import encode_dataset
from cherry_mlx.data.jsonl import read_jsonl
from cherry_mlx.data.paths import DEFAULT_DATA_DIR
from cherry_mlx.data.shuffle import shuffle_encoded

PAD_T = 32
# Evaluation reads the loss at response positions only: their logits are all it needs.
_RESPONSE = SimpleNamespace(needed=lambda b: np.asarray(b["response"]).astype(bool))
BATCH_KEYS = ("inputs", "targets", "response", "level", "category")
_PAD_VALUES = {"inputs": 0, "targets": 0, "response": False, "level": 0, "category": -1}


def default_data_dir() -> Path:
    return Path(DEFAULT_DATA_DIR)


def load_split(path: Path, tokenizer, max_len: int):
    """Read and encode one JSONL split (colleagues' validated reader: errors name file:line)."""
    examples = read_jsonl(path)
    if not examples:
        raise ValueError(f"{path} has no examples; rebuild the data (cherry-mlx data build)")
    encoded, stats = encode_dataset(examples, tokenizer, max_len)
    return encoded, stats, examples


def load_splits(data_dir: Optional[str], tokenizer, max_len: int) -> Dict[str, Any]:
    """Encoded ``train`` and ``valid`` (and raw ``test`` examples when present) of a data dir."""
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    if data_dir.is_file():
        raise ValueError(
            f"--data {data_dir} is a file; pass the directory that holds train.jsonl (and "
            f"valid.jsonl, test.jsonl), e.g. put it there as train.jsonl and pass that directory"
        )
    train_file, valid_file = data_dir / "train.jsonl", data_dir / "valid.jsonl"
    if not train_file.is_file():
        hint = "cherry-mlx data build" if not data_dir.exists() else "add train.jsonl"
        raise FileNotFoundError(f"{train_file} not found; run `{hint}` or pass --data DIR")
    out: Dict[str, Any] = {"data_dir": data_dir}
    out["train"], out["train_stats"], out["train_examples"] = load_split(
        train_file, tokenizer, max_len
    )
    if not out["train"]:
        raise ValueError(f"training data is empty: {_all_dropped(train_file, out['train_stats'])}")
    if valid_file.is_file():
        out["valid"], out["valid_stats"], _ = load_split(valid_file, tokenizer, max_len)
        if not out["valid"]:
            warnings.warn(
                f"valid split is empty: {_all_dropped(valid_file, out['valid_stats'])}; "
                "training runs with no evaluation and writes no best/",
                stacklevel=2,
            )
    else:  # hold out 5% of train, deterministically
        if len(out["train"]) < 2:
            raise ValueError(
                f"training data is empty: {train_file} has one usable example and, with no "
                f"valid.jsonl beside it, it would be held out for validation; add valid.jsonl "
                f"or more examples"
            )
        n = max(1, len(out["train"]) // 20)
        out["valid"], out["train"] = out["train"][:n], out["train"][n:]
    test_file = data_dir / "test.jsonl"
    if test_file.is_file():
        out["test_examples"] = read_jsonl(test_file)
    return out


def _all_dropped(path: Path, stats) -> str:
    """Why encoding kept none of a split's examples, with the fix."""
    return (
        f"all {stats.examples} examples of {path} were dropped when encoding "
        f"({stats.dropped_no_response} had no response left after truncation, "
        f"{stats.dropped_too_long} were too long); raise --seq-len or shorten the prompts"
    )


def warn_without_gt(select: str, data) -> None:
    """``--select gt`` on examples without a single GT token trains only the plain part of the
    mixed loss: say so loudly instead of reporting ``GT 0 (0.0%)`` as if that were fine."""
    if select != "gt" or not isinstance(data, (list, tuple)) or not data:
        return
    if not any(bool((np.asarray(e.level)[np.asarray(e.response)] > 0).any()) for e in data):
        warnings.warn(
            "--select gt: the training data has no GT spans, so only the (1-λ) plain part of the "
            "loss trains; tag it first (cherry-mlx tag FILE -o OUT) or pass --select all",
            stacklevel=2,
        )


def train_iterator(data, batch_size: int, max_len: int, seed: int):
    """An endless batch iterator with state_dict/load_state_dict over encoded examples."""
    if isinstance(data, (list, tuple)):
        if len(data) == 0:
            raise ValueError("training data is empty: no encoded examples were given")
        # Length bucketing: less padding, and the shapes the compiled step sees stay few.
        return BatchIterator(
            list(data),
            batch_size,
            max_len,
            seed=seed,
            shuffle=True,
            bucket=True,
            pad_multiple=PAD_T,
        )
    return data  # already an iterator of batches


def shuffled_examples(data, seed: int):
    """Encoded examples with each response run token-shuffled (``train --shuffle-responses``),
    numpy-seeded so a resumed run sees the same text; batch iterators cannot be shuffled here."""
    if not isinstance(data, (list, tuple)):
        raise ValueError(
            "--shuffle-responses needs encoded examples, not a batch iterator; shuffle the "
            "batches yourself (cherry_mlx.data.shuffle.shuffle_batch)"
        )
    rng = np.random.default_rng(seed)
    return [shuffle_encoded(e, rng) for e in data]


def valid_batches(data, batch_size: int, max_len: int) -> List[dict]:
    """One ordered pass over the held-out data as a list of batches (reused at every eval)."""
    if data is None:
        return []
    data = list(data)
    if data and not isinstance(data[0], dict):
        data = list(BatchIterator(data, batch_size, max_len, shuffle=False, loop=False))
    return [prepare_batch(b, _RESPONSE)[0] for b in data]


def next_batch(it) -> dict:
    """Next training batch; training iterators are endless (epochs restart inside them)."""
    try:
        return next(it)
    except StopIteration:
        raise ValueError("training data iterator ran out; pass an endless iterator") from None


def _bucket(n: int, total: int) -> int:
    step = max(32, total // 16)
    return min(total, max(step, -(-n // step) * step))


def prepare_batch(batch: dict, loss_fn=None, extra: Optional[dict] = None) -> Tuple[dict, dict]:
    """Pad T to a multiple of PAD_T and add ``pos``/``pos_valid`` for ``loss_fn.needed``.

    Returns (mx batch for the compiled step, numpy stats {"tokens", "ntoks"}).
    """
    np_b = {k: np.asarray(batch[k]) for k in BATCH_KEYS if k in batch}
    missing = [k for k in BATCH_KEYS if k not in np_b]
    if missing:
        raise ValueError(f"batch is missing {missing}; batches follow the losses.py contract")
    B, T = np_b["targets"].shape
    T2 = -(-T // PAD_T) * PAD_T
    if T2 != T:
        for k, v in np_b.items():
            pad = np.full((B, T2 - T), _PAD_VALUES[k], dtype=v.dtype)
            np_b[k] = np.concatenate([v, pad], axis=1)
    out = {k: mx.array(v) for k, v in np_b.items()}
    out["response"] = out["response"].astype(mx.bool_)
    if "lengths" in batch:
        tokens = int(np.asarray(batch["lengths"]).sum())
    else:  # positions up to the last response token of each row
        resp = np_b["response"].astype(bool)
        last = np.where(resp.any(1), T2 - np.argmax(resp[:, ::-1], axis=1), 0)
        tokens = int(last.sum())
    stats = {"tokens": tokens, "ntoks": int(np_b["response"].sum())}
    need = getattr(loss_fn, "needed", None)
    if need is not None:
        pos = np.flatnonzero(need(np_b)).astype(np.int32)
        n = _bucket(len(pos), B * T2)
        valid = np.zeros(n, dtype=bool)
        valid[: len(pos)] = True
        out["pos"] = mx.array(np.concatenate([pos, np.zeros(n - len(pos), np.int32)]))
        out["pos_valid"] = mx.array(valid)
    for k, v in (extra or {}).items():
        out[k] = v
    return out, stats


class CycleBatches:
    """An endless, resumable iterator over a fixed list of batches (tests, precomputed data)."""

    def __init__(self, batches: List[dict]):
        if not batches:
            raise ValueError("CycleBatches needs at least one batch")
        self.batches, self.pos = list(batches), 0

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        b = self.batches[self.pos % len(self.batches)]
        self.pos += 1
        return b

    def state_dict(self) -> dict:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.pos = int(state["pos"])
