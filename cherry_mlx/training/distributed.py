"""Data parallelism over an ``mx.distributed`` group, as started by ``mlx.launch``.

Every rank runs the same trainer on the same stream of global batches (``--batch-size`` is the
global batch, as in mlx-lm) and keeps rows ``rank::size`` of each: strided rather than contiguous,
so with length-bucketed batches every rank gets a similar mix of lengths. The compiled step sums
``grad·ntoks``, ``loss·ntoks`` and ``ntoks`` over the ranks before dividing, so the update is the
supervised-token-weighted mean over the whole global batch, which is what one rank computes on it
(up to float rounding). Averaging the ranks' mean gradients instead would over-weight the tokens of
a rank whose shard happens to have few supervised positions.

Weights, optimiser state and the (global) data position are the same on every rank, so rank 0
alone writes the run, and a checkpoint resumes with any number of ranks.

A collective waits for every rank. ``Watchdog`` bounds the wait: a rank that died makes the ring
backend raise (turned into ``RankFailed``); one that hangs trips the watchdog thread, which prints
what it was waiting for and ends the process; both messages name the other ranks and the resume
command.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

import mlx.core as mx
import numpy as np
from mlx.nn.utils import average_gradients
from mlx.utils import tree_map

WATCHDOG_EXIT = 3  # exit status of a rank stopped by its watchdog
# Errors the communication backends raise when a peer is gone (e.g. "[ring] connection to a peer
# was lost"); other RuntimeErrors are real bugs and pass through untouched.
_PEER_LOST = re.compile(r"\[(ring|mpi|nccl|jaccl)\]|peer|connection", re.IGNORECASE)


class RankFailed(ValueError):
    """Another rank of a distributed run died: this one cannot continue."""


@dataclass
class Ranks:
    """This process's place in the distributed run (``group`` is None for a single process)."""

    group: Optional[Any] = None
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0 writes the run directory and prints; the others only compute."""
        return self.rank == 0

    def others(self) -> str:
        peers = [str(r) for r in range(self.size) if r != self.rank]
        return ("rank " if len(peers) == 1 else "one of ranks ") + ", ".join(peers)


def current_ranks() -> Ranks:
    """The group this process was launched into (``mlx.launch``, MPI, ...); size 1 otherwise."""
    if not mx.distributed.is_available():
        return Ranks()
    group = mx.distributed.init()
    if group.size() == 1:
        return Ranks()
    return Ranks(group, group.rank(), group.size())


def check_batch_size(batch_size: int, ranks: Ranks) -> None:
    """The global batch is split evenly: every rank must hold the same number of rows."""
    if batch_size % ranks.size:
        lo = max(ranks.size, batch_size // ranks.size * ranks.size)
        raise ValueError(
            f"--batch-size {batch_size} is the global batch and must divide by the {ranks.size} "
            f"ranks; use a multiple of {ranks.size} (e.g. {lo} or {lo + ranks.size})"
        )


class Shard:
    """This rank's rows ``rank::size`` of every global batch of ``inner``.

    ``state_dict``/``load_state_dict`` are the inner iterator's: the position in the global batch
    stream, the same on every rank, so a checkpoint resumes under any number of ranks. An inner
    ``BatchIterator`` collates only this rank's examples (``next_indices``); other iterators of
    batch dicts are sliced by rows.
    """

    def __init__(self, inner, ranks: Ranks):
        self.inner, self.ranks = inner, ranks

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        r, n = self.ranks.rank, self.ranks.size
        if hasattr(self.inner, "next_indices"):
            idx = self.inner.next_indices()
            self._check(len(idx))
            return self.inner.collate(idx[r::n])
        batch = next(self.inner)
        rows = int(np.asarray(batch["targets"]).shape[0])
        self._check(rows)
        return {k: _rows(v, r, n) for k, v in batch.items()}

    def _check(self, rows: int) -> None:
        if rows % self.ranks.size:
            raise ValueError(
                f"a training batch has {rows} rows, which do not split evenly over "
                f"{self.ranks.size} ranks; give batches a multiple of {self.ranks.size} rows"
            )

    def state_dict(self) -> Optional[dict]:
        return self.inner.state_dict() if hasattr(self.inner, "state_dict") else None

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)

    def __getattr__(self, name):  # epoch, __len__-like extras of the inner iterator
        return getattr(self.inner, name)


def _rows(v, r: int, n: int):
    if isinstance(v, mx.array) and v.ndim >= 1:
        return v[r::n]
    if isinstance(v, np.ndarray) and v.ndim >= 1:
        return v[r::n]
    return v


def shard_iterator(it, ranks: Ranks):
    """``it`` itself for a single process, else this rank's ``Shard`` of it."""
    return it if ranks.size == 1 else Shard(it, ranks)


def rank_key(key: mx.array, ranks: Ranks) -> mx.array:
    """A per-rank PRNG key from the step's shared key (random selection must not repeat the same
    draws on every rank's rows); unchanged for a single process."""
    return key if ranks.size == 1 else mx.random.split(key, ranks.size)[ranks.rank]


def all_sum_tokens(grads, loss_sum: mx.array, ntoks: mx.array, group):
    """Token-weighted means over every rank: (Σ g·n / Σ n, Σ l·n / Σ n, Σ n).

    ``grads`` and ``loss_sum`` arrive already multiplied by this rank's ``ntoks`` (summed over its
    micro-batches). Runs inside the compiled step; ``average_gradients`` packs the gradients into
    few large all-reduces.
    """
    size = group.size()
    mean_of_sums = average_gradients(grads, group)  # Σ_r (g·n)_r / size
    totals = mx.distributed.all_sum(mx.stack([loss_sum, ntoks]), group=group)  # (2,)
    denom = mx.maximum(totals[1], 1.0)
    scale = size / denom
    return tree_map(lambda g: g * scale.astype(g.dtype), mean_of_sums), totals[0] / denom, totals[1]


def global_counts(ranks: Ranks, *counts: int):
    """Host-side per-step counts (tokens, supervised tokens) summed over the ranks."""
    if ranks.size == 1:
        return counts
    total = mx.distributed.all_sum(mx.array(counts, dtype=mx.int32), group=ranks.group)
    return tuple(int(c) for c in total.tolist())


def broadcast_text(text: str, ranks: Ranks) -> str:
    """Rank 0's ``text`` on every rank (e.g. a run name made from the clock, which the ranks
    could read a second apart)."""
    if ranks.size == 1:
        return text
    data = np.frombuffer(text.encode(), np.uint8).astype(np.int32) if ranks.main else []
    n = int(mx.distributed.all_sum(mx.array(len(data)), group=ranks.group).item())
    buf = mx.array(data, mx.int32) if ranks.main else mx.zeros((n,), mx.int32)
    got = np.array(mx.distributed.all_sum(buf, group=ranks.group))
    return got.astype(np.uint8).tobytes().decode()


def barrier(ranks: Ranks) -> None:
    """Wait until every rank reaches this point."""
    if ranks.size > 1:
        mx.eval(mx.distributed.all_sum(mx.array(1.0), group=ranks.group))


class Watchdog:
    """Bounds every wait on the other ranks (``with watchdog.waiting(what): ...``).

    A daemon thread checks once a second; when a wait has lasted ``timeout`` seconds it prints
    what it waited for, names the other ranks and ends the process with ``WATCHDOG_EXIT`` (the
    main thread is stuck inside the collective and cannot raise). A backend error about a lost
    peer inside the wait becomes ``RankFailed``. Does nothing for a single process.
    """

    def __init__(self, ranks: Ranks, timeout: float, resume_hint: str = ""):
        self.ranks, self.timeout, self.hint = ranks, float(timeout), resume_hint
        self._since: Optional[float] = None
        self._what = ""
        self._stop = threading.Event()
        self._thread = None
        if ranks.size > 1 and self.timeout > 0:
            self._thread = threading.Thread(target=self._watch, name="cherry-watchdog", daemon=True)
            self._thread.start()

    def _where(self) -> str:
        return f"rank {self.ranks.rank} of {self.ranks.size}"

    @contextmanager
    def waiting(self, what: str):
        self._what, self._since = what, time.monotonic()
        try:
            yield
        except RuntimeError as err:
            if self.ranks.size == 1 or not _PEER_LOST.search(str(err)):
                raise
            raise RankFailed(
                f"{self._where()}: {what}: {err}; {self.ranks.others()} stopped (its own error, "
                f"if any, is above){self.hint}"
            ) from None
        finally:
            self._since = None

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.timeout / 4)):
            since = self._since
            if since is not None and time.monotonic() - since > self.timeout:
                sys.stderr.write(
                    f"cherry-mlx: error: {self._where()}: waited {self.timeout:.0f} s for the "
                    f"other ranks ({self._what}); {self.ranks.others()} died or hung (its own "
                    f"error, if any, is above); stopping this rank{self.hint}\n"
                )
                sys.stderr.flush()
                os._exit(WATCHDOG_EXIT)

    def close(self) -> None:
        self._stop.set()
