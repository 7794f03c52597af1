"""Hand-built 'checkpoints' and batches shared by the wave, coupling and eval tests."""

import mlx.core as mx
import numpy as np

from cherry_mlx.data.categories import CATEGORIES

# One row of 6 targets: position 0 is prompt (never counted), GT at 1 and 4, non-GT at 2, 3, 5.
RESPONSE = [False, True, True, True, True, True]
LEVEL = [0, 1, 0, 0, 2, 0]
CATEGORY = [-1, CATEGORIES.index("factual"), -1, -1, CATEGORIES.index("reasoning"), -1]


class FixedCE:
    """A 'checkpoint' whose CE at each position is given: logits (1, T, 2) for target 0."""

    def __init__(self, ce):
        p = np.exp(-np.asarray(ce, dtype=np.float64))
        logits = np.stack([np.log(p), np.log1p(-p)], axis=-1)[None]  # (1, T, 2)
        self.logits = mx.array(logits.astype(np.float32))

    def __call__(self, inputs):
        return self.logits


def batch():
    return {
        "inputs": mx.zeros((1, 6), dtype=mx.int32),
        "targets": mx.zeros((1, 6), dtype=mx.int32),
        "response": mx.array([RESPONSE]),
        "level": mx.array([LEVEL], dtype=mx.int8),
        "category": mx.array([CATEGORY], dtype=mx.int8),
    }


# CE per position: prompt 7 (must be ignored), GT (pos 1, 4), non-GT (pos 2, 3, 5).
BASE = FixedCE([7.0, 1.0, 3.0, 3.0, 1.0, 3.0])  # GT 1.0, non-GT 3.0, total 11/5 = 2.2
SGT = FixedCE([7.0, 0.5, 2.0, 2.0, 0.5, 2.0])  # GT 0.5, non-GT 2.0, total 7/5 = 1.4
FULL = FixedCE([7.0, 0.4, 1.0, 1.0, 0.4, 1.0])  # GT 0.4, non-GT 1.0, total 3.8/5 = 0.76


def make_batch(B=2, T=24, vocab=256, seed=3):
    """A batch of low-entropy repeating text with random GT tags (tensors)."""
    rng = np.random.default_rng(seed)
    # Low-entropy repeating text so there is something shared across positions to couple through.
    base = rng.integers(0, vocab, size=8)
    seq = np.stack([np.roll(np.tile(base, 4), r)[: T + 1] for r in range(B)]).astype(np.int32)
    resp = np.zeros((B, T), bool)
    resp[:, 4:] = True
    level = np.where(resp & (rng.random((B, T)) < 0.25), 1, 0).astype(np.int8)
    cat = np.where(level > 0, 0, -1).astype(np.int8)
    return {
        "inputs": mx.array(seq[:, :-1]),
        "targets": mx.array(seq[:, 1:]),
        "response": mx.array(resp),
        "level": mx.array(level),
        "category": mx.array(cat),
    }
