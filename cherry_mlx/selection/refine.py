"""Contrastive refinement of GT candidates (paper §3.2.2 step 3).

For a candidate response token at position t, replace it by another token ("corrupted response")
and measure how much the model's layer-ℓ activations move:

    d_t = sqrt( mean_{t < s < T} ‖h_ℓ(x)_s − h_ℓ(x̃^{(t)})_s‖² )

averaged over k replacements x̃^{(t)} (or over the next ``window`` positions only). The shared
prefix s < t is identical in both sequences (causal mask), so it is taken from a KV cache of the
correct sequence, not recomputed.

Why downstream positions (s > t) only: at s = t the two sequences differ by their input embedding,
so *every* token moves there by about the same amount and the position carries no ranking signal.
What makes a token decisive is how much the rest of the response's representation depends on it;
the causal mask guarantees positions before t do not move at all. The mean (not the sum) over
downstream positions keeps early tokens from winning just because more positions follow them.

A candidate is promoted to GT when ``d_t / median_t(d) > τ`` (default 5): the raw norm scales
with the model's width and depth, the ratio to the example's median does not. A random-init model
has a narrow distribution (nothing passes τ = 5); trained ones have a heavy tail.
Promoted tokens that no rule tagged get level 1 and category "reasoning" (the paper's "core CoT
pivots": what the model relies on without a surface rule saying why).

Per-layer states come from our own loop over ``model.model.layers`` in ``schedule`` order (the
recurrent core included), so the model is not changed: ``layer_states(model, x, depth)`` followed by
the final norm equals ``model.hidden(x)`` (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import List, Optional, Sequence

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import KVCache


@dataclass
class RefineConfig:
    """Settings of the contrastive refinement."""

    layer: Optional[int] = None  # block call whose output is compared; None = middle of the depth
    tau: float = 5.0  # promote when d_t / median(d) > tau
    k: int = 1  # corruptions per candidate (averaged); each costs one forward pass per token
    window: Optional[int] = None  # downstream positions averaged (None = all up to the end)
    seed: int = 0
    batch_size: int = 32  # corrupted sequences per forward pass
    max_examples: int = 32  # examples scored by ``refine_examples``
    words: bool = True  # candidates are word-initial tokens (see refine_data); False = all tokens
    top: int = 5  # hit@top


def depth(model) -> int:
    return len(model.model.schedule)


def resolve_layer(model, layer: Optional[int]) -> int:
    """Layer index in 0..depth (0 = embeddings, depth = last block before the final norm)."""
    n = depth(model)
    if layer is None:
        return max(1, n // 2)
    if not 0 <= layer <= n:
        raise ValueError(f"--layer {layer} is outside 0..{n} (the model's effective depth)")
    return layer


def layer_states(model, tokens: mx.array, layer: int, cache=None) -> mx.array:
    """Residual stream after ``layer`` block calls. (B, T) int -> (B, T, D)

    ``cache``: one mlx-lm ``KVCache`` per block call (``layer`` of them) holding a shared prefix;
    ``tokens`` then continue it."""
    inner = model.model
    h = inner.embed(tokens)
    masks = inner.layer_masks(h, cache[0] if cache else None)
    for i, idx in enumerate(inner.schedule[:layer]):
        h = inner.layers[idx](h, masks[idx], cache=cache[i] if cache else None)
    return h


def _prefix_cache(base_cache, start: int, batch: int):
    """Copies of the correct sequence's keys/values for positions < start, for ``batch`` rows."""
    out = []
    for c in base_cache:
        nc = KVCache()
        nc.keys = mx.repeat(c.keys[:, :, :start, :], batch, axis=0)
        nc.values = mx.repeat(c.values[:, :, :start, :], batch, axis=0)
        nc.offset = start
        out.append(nc)
    return out


def contrastive_scores(
    model,
    tokens: Sequence[int],
    positions: Sequence[int],
    replacements: np.ndarray,
    layer: int,
    batch_size: int = 32,
    window: Optional[int] = None,
) -> np.ndarray:
    """d_t (module docstring) for each candidate position.

    tokens: (T,) the correct sequence; positions: (N,) candidates; replacements: (N, k) token ids
    that replace the candidate in the k corrupted copies. Returns (N,) float64. A replacement equal
    to the original token gives a zero contribution (the uncorrupted pair).
    """
    x = np.asarray(tokens, dtype=np.int32)
    pos = np.asarray(positions, dtype=np.int64)
    reps = np.asarray(replacements, dtype=np.int32).reshape(len(pos), -1)
    n, k = reps.shape
    T = len(x)
    cache = [KVCache() for _ in range(layer)]
    base = layer_states(model, mx.array(x[None]), layer, cache).astype(mx.float32)  # (1, T, D)
    mx.eval(base, [(c.keys, c.values) for c in cache])
    # flatten (candidate, replacement) pairs into rows of corrupted sequences, sorted by position
    # so that a chunk shares the correct prefix before its first candidate: that prefix is taken
    # from the cache instead of being recomputed (the causal mask makes it identical)
    order = np.argsort(np.repeat(pos, k), kind="stable")
    row_pos = np.repeat(pos, k)[order]  # (N*k,)
    row_tok = reps.reshape(-1)[order]
    out = np.zeros(n * k, dtype=np.float64)
    for a in range(0, n * k, batch_size):
        p = row_pos[a : a + batch_size]
        s = int(p.min()) if layer > 0 else 0
        batch = np.repeat(x[None], len(p), axis=0)  # (b, T)
        batch[np.arange(len(p)), p] = row_tok[a : a + batch_size]
        pre = _prefix_cache(cache, s, len(p)) if s > 0 else None
        h = layer_states(model, mx.array(batch[:, s:]), layer, pre).astype(mx.float32)
        sq = ((h - base[:, s:]) ** 2).sum(axis=-1)  # (b, T - s)
        t = np.arange(s, T)[None, :]
        down = t > p[:, None]  # positions after the candidate ...
        if window is not None:
            down &= t <= p[:, None] + window  # ... within the window
        down = mx.array(down)
        cnt = mx.maximum(down.sum(axis=1), 1)
        d = mx.sqrt((sq * down).sum(axis=1) / cnt)  # (b,)
        out[order[a : a + len(p)]] = np.array(d, dtype=np.float64)
    return out.reshape(n, k).mean(axis=1)


def draw_replacements(
    originals: Sequence[int], pool: Sequence[int], k: int, rng: np.random.Generator
) -> np.ndarray:
    """(N, k) replacement ids from ``pool``, never the original token (when the pool allows)."""
    pool = np.asarray(sorted(set(int(t) for t in pool)), dtype=np.int32)
    if len(pool) < 2:
        raise ValueError("refinement needs a pool of at least 2 distinct replacement tokens")
    out = np.empty((len(originals), k), dtype=np.int32)
    for i, t in enumerate(originals):
        choices = pool[pool != t]
        out[i] = rng.choice(choices, size=k, replace=len(choices) < k)
    return out


def promote(scores: np.ndarray, tau: float) -> np.ndarray:
    """Bool mask of candidates whose score exceeds tau times the median score."""
    med = float(np.median(scores)) if len(scores) else 0.0
    if med <= 0:
        return scores > 0
    return scores / med > tau


def hit_at(scores: np.ndarray, gold: np.ndarray, top: int = 5) -> dict:
    """hit@top (any of the top-ranked candidates is gold), precision@top, and the same two under a
    random ranking (exact hypergeometric expectations), for one example."""
    n = len(scores)
    g = int(np.sum(gold))
    kk = min(top, n)
    order = np.argsort(-scores, kind="stable")[:kk]
    hits = int(np.sum(gold[order]))
    rand_hit = 1.0 - (comb(n - g, kk) / comb(n, kk) if n else 1.0)
    return {
        "hit": float(hits > 0),
        "precision": hits / kk if kk else 0.0,
        "random_hit": rand_hit,
        "random_precision": g / n if n else 0.0,
    }


def summarise(per_example: List[dict]) -> dict:
    """Mean of ``hit_at`` results over examples."""
    if not per_example:
        return {"examples": 0}
    keys = per_example[0].keys()
    out = {k: float(np.mean([r[k] for r in per_example])) for k in keys}
    out["examples"] = len(per_example)
    return out
