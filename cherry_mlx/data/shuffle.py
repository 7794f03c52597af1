"""Token-shuffled text, the control of Corollary 5 (coupling should vanish on incoherent text).

What is shuffled: the tokens of each contiguous run of *response* positions (one assistant turn),
each token carrying its own labels (level, category) with it. The prompt, the special tokens around
the turn and the padding stay where they are. So every turn keeps exactly its multiset of tokens and
its GT count (the same supervision budget, the same unigram statistics), and only the order - the
thing Corollary 5 says the coupling lives on - is destroyed.

Shuffling is numpy-seeded (``np.random.default_rng``), independent of MLX's global RNG, so a
shuffled evaluation set is the same set every time.
"""

from __future__ import annotations

from typing import Optional

import mlx.core as mx
import numpy as np


def response_runs(response: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each maximal run of True in a 1-D bool array."""
    r = np.concatenate([[False], np.asarray(response, dtype=bool), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(r))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def shuffle_positions(
    tokens: np.ndarray, response: np.ndarray, labels=(), rng: Optional[np.random.Generator] = None
):
    """Permute tokens (and each label array alongside) within every response run of one sequence.

    tokens (T,), response (T,) bool, labels: arrays (T,) that travel with their token.
    Returns (tokens, labels) as new arrays; ``response`` itself is unchanged by construction.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    tokens = np.array(tokens, copy=True)
    labels = [np.array(x, copy=True) for x in labels]
    for s, e in response_runs(response):
        perm = s + rng.permutation(e - s)
        tokens[s:e] = tokens[perm]
        for x in labels:
            x[s:e] = x[perm]
    return tokens, labels


def shuffle_encoded(enc, rng: Optional[np.random.Generator] = None):
    """A copy of an ``Encoded`` example (per-token arrays aligned with ``tokens``) with shuffled
    response runs; works on any object with ``tokens, response, level, category`` arrays."""
    import dataclasses

    tokens, (level, category) = shuffle_positions(
        enc.tokens, enc.response, (enc.level, enc.category), rng
    )
    return dataclasses.replace(enc, tokens=tokens, level=level, category=category)


def shuffle_batch(batch: dict, seed: int = 0) -> dict:
    """Token-shuffled copy of a losses.py batch (labels are aligned with ``targets``).

    The row's sequence is s = [inputs[0], targets...]; target t is s[t+1], so the labels of s are
    the batch labels shifted by one. Shuffle s within response runs and cut inputs/targets again.
    """
    inputs = np.array(batch["inputs"])
    targets = np.array(batch["targets"])
    resp = np.array(batch["response"]).astype(bool)
    # Every input that conditions a supervised target must be the previous target (padding past
    # the end may differ: the trainer pads inputs and targets independently).
    used = resp[:, 1:]
    if inputs.shape != targets.shape or not np.array_equal(
        inputs[:, 1:][used], targets[:, :-1][used]
    ):
        raise ValueError(
            "shuffle_batch needs a next-token batch (inputs[:, 1:] == targets[:, :-1]); "
            "shuffle the examples before batching instead (shuffle_encoded)"
        )
    rng = np.random.default_rng(seed)
    level = np.array(batch["level"])
    cat = np.array(batch["category"])
    out_in, out_tg = np.empty_like(inputs), np.empty_like(targets)
    out_lv, out_cat = np.empty_like(level), np.empty_like(cat)
    for b in range(inputs.shape[0]):
        seq = np.concatenate([inputs[b, :1], targets[b]])  # (T+1,)
        r = np.concatenate([[False], resp[b]])
        lv = np.concatenate([level[b, :1], level[b]])
        ct = np.concatenate([cat[b, :1], cat[b]])
        seq, (lv, ct) = shuffle_positions(seq, r, (lv, ct), rng)
        out_in[b], out_tg[b] = seq[:-1], seq[1:]
        out_lv[b], out_cat[b] = lv[1:], ct[1:]
    out = dict(batch)
    out.update(
        inputs=mx.array(out_in),
        targets=mx.array(out_tg),
        level=mx.array(out_lv),
        category=mx.array(out_cat),
    )
    return out
