"""Token shuffling for the Corollary-5 control: order destroyed, counts and labels kept."""

from collections import Counter
from dataclasses import dataclass

import mlx.core as mx
import numpy as np
import pytest

from cherry_mlx.data.shuffle import (
    response_runs,
    shuffle_batch,
    shuffle_encoded,
    shuffle_positions,
)


def test_response_runs():
    r = np.array([0, 1, 1, 0, 0, 1, 1, 1, 0, 1], dtype=bool)
    assert response_runs(r) == [(1, 3), (5, 8), (9, 10)]
    assert response_runs(np.zeros(4, bool)) == []


def make_batch(B=3, T=40, seed=1):
    rng = np.random.default_rng(seed)
    seq = rng.integers(0, 256, size=(B, T + 1)).astype(np.int32)
    resp = np.zeros((B, T), bool)
    resp[:, 8:30] = True  # one turn
    resp[:, 33:38] = True  # a second turn
    level = np.where(resp & (rng.random((B, T)) < 0.3), 1, 0).astype(np.int8)
    cat = np.where(level > 0, rng.integers(0, 6, size=(B, T)), -1).astype(np.int8)
    return {
        "inputs": mx.array(seq[:, :-1]),
        "targets": mx.array(seq[:, 1:]),
        "response": mx.array(resp),
        "level": mx.array(level),
        "category": mx.array(cat),
    }


def test_shuffle_batch_keeps_counts_destroys_order():
    b = make_batch()
    s = shuffle_batch(b, seed=0)
    tg, stg = np.array(b["targets"]), np.array(s["targets"])
    resp = np.array(b["response"])
    assert np.array_equal(np.array(s["response"]), resp)
    # Still a next-token batch.
    assert np.array_equal(np.array(s["inputs"])[:, 1:], stg[:, :-1])
    for row in range(tg.shape[0]):
        for a, e in response_runs(resp[row]):
            # Same multiset of (token, level, category) triples within each turn ...
            before = Counter(
                zip(tg[row, a:e], np.array(b["level"])[row, a:e], np.array(b["category"])[row, a:e])
            )
            after = Counter(
                zip(
                    stg[row, a:e], np.array(s["level"])[row, a:e], np.array(s["category"])[row, a:e]
                )
            )
            assert before == after
        # ... prompt/non-response targets untouched ...
        assert np.array_equal(tg[row, ~resp[row]], stg[row, ~resp[row]])
    # ... GT count unchanged, and the order actually changed.
    assert int((np.array(s["level"]) > 0).sum()) == int((np.array(b["level"]) > 0).sum())
    assert (tg != stg).mean() > 0.5
    # Deterministic for a seed, different across seeds.
    assert np.array_equal(np.array(shuffle_batch(b, seed=0)["targets"]), stg)
    assert not np.array_equal(np.array(shuffle_batch(b, seed=1)["targets"]), stg)


def test_shuffle_batch_rejects_non_next_token_batch():
    b = make_batch()
    b["inputs"] = mx.zeros_like(b["inputs"])
    with pytest.raises(ValueError, match="next-token"):
        shuffle_batch(b)


@dataclass
class Enc:
    tokens: np.ndarray
    response: np.ndarray
    level: np.ndarray
    category: np.ndarray


def test_shuffle_encoded_and_positions():
    tokens = np.arange(20, dtype=np.int32)
    resp = np.zeros(20, bool)
    resp[5:15] = True
    level = np.where(tokens % 3 == 0, 1, 0).astype(np.int8) * resp
    cat = np.where(level > 0, 2, -1).astype(np.int8)
    e = shuffle_encoded(Enc(tokens, resp, level, cat), np.random.default_rng(0))
    assert np.array_equal(e.tokens[:5], tokens[:5]) and np.array_equal(e.tokens[15:], tokens[15:])
    assert sorted(e.tokens[5:15].tolist()) == list(range(5, 15))
    assert not np.array_equal(e.tokens, tokens)
    # Labels travel with their token.
    assert np.array_equal(e.level, np.where(e.tokens % 3 == 0, 1, 0) * resp)
    # Input arrays are not modified in place.
    t2, _ = shuffle_positions(tokens, resp)
    assert np.array_equal(tokens, np.arange(20))
