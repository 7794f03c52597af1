"""Batches of encoded examples in the batch contract of ``selection/losses.py``.

Host-side numpy, one ``mx.array`` per field per batch: batching must cost nothing next to a step.

Order is a pure function of (seed, position), which is what makes resuming exact: the examples
form an endless stream, epoch ``e`` being the permutation ``default_rng([seed, e])`` of all
examples (or their file order with ``shuffle=False``), cut into windows of ``batch_size *
bucket_windows`` examples. Without bucketing a window is one batch. With bucketing the window is
sorted by length and cut into batches, which are then visited in a seeded random order, so similar
lengths share a batch (less padding) while batches stay shuffled. ``state_dict()`` is just the
next (window, batch) position; a resumed iterator yields exactly the batches the original would
have. Batches may span an epoch boundary, so data sets smaller than a batch work too.

Shapes: every sequence is cut to ``max_len + 1`` tokens; a batch is padded to the longest sequence
rounded up to ``pad_multiple`` (few distinct shapes, so a compiled step rarely retraces; capped at
``max_len``), or to exactly ``max_len`` with ``fixed_length``. Arrays are aligned with targets
(``tokens[1:]``), padding is never response.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import mlx.core as mx
import numpy as np

from cherry_mlx.data.encode import Encoded

_BUCKET_SALT = 7_919  # separates the batch-order stream from the epoch permutations


class BatchIterator:
    """Seeded, resumable iterator over batches ``{inputs, targets, response, level, category}``.

    ``loop=True`` (training) cycles through epochs forever; ``loop=False`` (evaluation) makes one
    pass over every example exactly once, the last batch possibly smaller."""

    def __init__(
        self,
        encoded: Sequence[Encoded],
        batch_size: int,
        max_len: int,
        seed: int = 0,
        shuffle: bool = True,
        loop: bool = True,
        bucket: bool = False,
        bucket_windows: int = 16,
        pad_id: int = 0,
        pad_multiple: int = 16,
        fixed_length: bool = False,
    ):
        if not encoded:
            raise ValueError(
                "no examples to batch: the data set is empty after encoding "
                "(check the encode stats for dropped examples)"
            )
        if batch_size < 1 or max_len < 1:
            raise ValueError(f"batch_size={batch_size}, max_len={max_len}: both must be >= 1")
        self.encoded = encoded
        self.batch_size = batch_size
        self.max_len = max_len
        self.seed = seed
        self.shuffle = shuffle
        self.loop = loop
        self.pad_id = pad_id
        self.pad_multiple = max(1, pad_multiple)
        self.fixed_length = fixed_length
        self.window_size = batch_size * (bucket_windows if bucket else 1)
        self.bucket = bucket
        self.lengths = np.array([min(len(e), max_len + 1) for e in encoded])
        self._window, self._batch = 0, 0
        self._perm_cache: dict[int, np.ndarray] = {}

    # -- order ---------------------------------------------------------------------------------
    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm_cache:
            n = len(self.encoded)
            perm = (
                np.random.default_rng([self.seed, epoch]).permutation(n)
                if self.shuffle
                else np.arange(n)
            )
            self._perm_cache = {
                epoch: perm,
                **{k: v for k, v in self._perm_cache.items() if k == epoch - 1},
            }
        return self._perm_cache[epoch]

    def _window_batches(self, k: int) -> list[np.ndarray]:
        """Example indices of the batches of window k, in visiting order ([] past the end)."""
        n = len(self.encoded)
        lo = k * self.window_size
        hi = lo + self.window_size
        if not self.loop:
            hi = min(hi, n)
            if lo >= n:
                return []
        idx = self._stream_slice(lo, hi)
        if not self.bucket:
            return [idx]
        idx = idx[np.argsort(self.lengths[idx], kind="stable")]
        batches = [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if self.shuffle:
            order = np.random.default_rng([self.seed, _BUCKET_SALT, k]).permutation(len(batches))
            batches = [batches[i] for i in order]
        return batches

    def _stream_slice(self, lo: int, hi: int) -> np.ndarray:
        n = len(self.encoded)
        parts = []
        p = lo
        while p < hi:
            epoch, off = divmod(p, n)
            take = min(hi - p, n - off)
            parts.append(self._perm(epoch)[off : off + take])
            p += take
        return np.concatenate(parts)

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Position of the next batch (JSON-serialisable); restore with ``load_state_dict``."""
        return {
            "window": self._window,
            "batch": self._batch,
            "seed": self.seed,
            "n_examples": len(self.encoded),
            "window_size": self.window_size,
        }

    def load_state_dict(self, state: dict) -> None:
        for key, mine in (
            ("seed", self.seed),
            ("n_examples", len(self.encoded)),
            ("window_size", self.window_size),
        ):
            if key in state and state[key] != mine:
                raise ValueError(
                    f"batch state has {key}={state[key]} but this iterator has "
                    f"{mine}; resume with the same data and batching settings"
                )
        self._window, self._batch = int(state["window"]), int(state["batch"])

    @property
    def epoch(self) -> float:
        """Examples consumed so far, in epochs."""
        done = self._window * self.window_size + self._batch * self.batch_size
        return done / len(self.encoded)

    def __len__(self) -> int:
        """Batches in one pass (one epoch when looping)."""
        n = len(self.encoded)
        return -(-n // self.batch_size)

    # -- batches -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        return self.collate(self.next_indices())

    def next_indices(self) -> np.ndarray:
        """Example indices of the next batch (advancing the position); ``collate`` builds it.
        Distributed training collates only its rank's share of them."""
        batches = self._window_batches(self._window)
        if self._batch >= len(batches):
            self._window, self._batch = self._window + 1, 0
            batches = self._window_batches(self._window)
            if not batches:
                raise StopIteration
        idx = batches[self._batch]
        self._batch += 1
        return idx

    def collate(self, idx: Sequence[int]) -> dict:
        """The batch dict for examples ``idx``: (B, T) arrays aligned with targets."""
        longest = int(self.lengths[idx].max()) - 1  # targets per sequence
        if self.fixed_length:
            T = self.max_len
        else:
            T = min(self.max_len, -(-max(longest, 1) // self.pad_multiple) * self.pad_multiple)
        B = len(idx)
        tokens = np.full((B, T + 1), self.pad_id, dtype=np.int32)
        response = np.zeros((B, T + 1), dtype=bool)
        level = np.zeros((B, T + 1), dtype=np.int8)
        category = np.full((B, T + 1), -1, dtype=np.int8)
        for row, i in enumerate(idx):
            e = self.encoded[i]
            n = min(len(e), T + 1)
            tokens[row, :n] = e.tokens[:n]
            response[row, :n] = e.response[:n]
            level[row, :n] = e.level[:n]
            category[row, :n] = e.category[:n]
        return {
            "inputs": mx.array(tokens[:, :-1]),
            "targets": mx.array(tokens[:, 1:]),
            "response": mx.array(response[:, 1:]),
            "level": mx.array(level[:, 1:]),
            "category": mx.array(category[:, 1:]),
        }
