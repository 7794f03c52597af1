"""Token frequencies of encoded data: the reduced draft vocabulary of the MTP heads (EAGLE-3 keeps
the N most frequent tokens of its training data; a head then scores N LM-head rows, not V)."""

from __future__ import annotations

from typing import Iterable, List

import numpy as np


def top_tokens(examples: Iterable, n: int, vocab_size: int) -> List[int]:
    """Sorted ids of the ``n`` most frequent tokens at response positions of encoded examples
    (objects with ``tokens`` and ``response`` arrays; an example without a response mask counts
    all its tokens). Ties and never-seen ids are taken in id order, so the result is stable."""
    if not 1 <= n <= vocab_size:
        raise ValueError(f"--mtp-draft-vocab {n}: use 1..{vocab_size} (the vocabulary size)")
    counts = np.zeros(vocab_size, dtype=np.int64)
    for ex in examples:
        toks = np.asarray(ex.tokens, dtype=np.int64)
        resp = getattr(ex, "response", None)
        if resp is not None and np.any(resp):
            toks = toks[np.asarray(resp, dtype=bool)]
        counts += np.bincount(toks[(toks >= 0) & (toks < vocab_size)], minlength=vocab_size)
    order = np.argsort(-counts, kind="stable")[:n]
    return sorted(int(i) for i in order)


def coverage(examples: Iterable, ids: List[int]) -> float:
    """Share of response tokens that lie in ``ids`` (an upper bound on greedy acceptance)."""
    keep = set(ids)
    hit = total = 0
    for ex in examples:
        toks = np.asarray(ex.tokens)
        resp = getattr(ex, "response", None)
        if resp is not None and np.any(resp):
            toks = toks[np.asarray(resp, dtype=bool)]
        total += toks.size
        hit += sum(int(t) in keep for t in toks.tolist())
    return hit / max(total, 1)
