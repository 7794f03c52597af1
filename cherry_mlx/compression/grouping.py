"""Which layers to merge: similarity-guided groups from the source's own hidden states.

The paper merges uniform runs of adjacent layers. Depth-pruning studies (ShortGPT, Gromov et al.,
LaCo) find redundancy uneven: some runs barely turn the residual stream, others (usually the
first and last layers) do most of the work. ``similarity_groups`` merges where the stream moves
least:

- ``d(a, b)``: mean angular distance arccos(cos(h_a, h_b)) / π between the residual stream
  entering block a and entering block b (so a run of layers [a, b) turns the stream by d(a, b));
- start from single layers; repeatedly merge the two adjacent groups whose union [a, b) has the
  smallest d(a, b), until ``target`` groups remain. A cap (``max_size``, default twice the
  uniform size) keeps one group from swallowing a long stretch a single layer cannot reproduce.

Statistics come from cached hidden states (``data.teacher_cache``, calibration rows that are not
the evaluation set), so choosing the groups costs no forward pass. ``block_influence`` is
ShortGPT's ``1 - cos(h_l, h_{l+1})`` from the same states (the ``best`` initialisation keeps the
most influential member of a group instead of the average).
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import numpy as np

Groups = List[List[int]]


def stream_distances(states: Sequence[np.ndarray], mask: Optional[np.ndarray] = None):
    """``d[a, b]``: mean angular distance / π between states a and b (depth+1 x depth+1).

    ``states``: residual streams entering each block and after the last, each (B, T, D);
    ``mask``: (B, T) positions to average over (default all)."""
    n = len(states)
    flat = [np.asarray(s, np.float32).reshape(-1, np.asarray(s).shape[-1]) for s in states]
    w = np.ones(flat[0].shape[0]) if mask is None else np.asarray(mask, np.float64).reshape(-1)
    unit = [f / np.maximum(np.linalg.norm(f, axis=-1, keepdims=True), 1e-12) for f in flat]
    d = np.zeros((n, n))
    for a in range(n):
        for b in range(a + 1, n):
            cos = np.clip((unit[a] * unit[b]).sum(-1), -1.0, 1.0)
            d[a, b] = d[b, a] = float((np.arccos(cos) / math.pi * w).sum() / max(w.sum(), 1e-12))
    return d


def block_influence(d: np.ndarray) -> List[float]:
    """Per-layer influence from the distance matrix: ``1 - cos`` of one block's turn (ShortGPT's
    BI, computed from the mean angle rather than the mean cosine)."""
    return [1.0 - math.cos(math.pi * d[i, i + 1]) for i in range(d.shape[0] - 1)]


def similarity_groups(d: np.ndarray, target: int, max_size: Optional[int] = None) -> Groups:
    """Greedy agglomeration of adjacent layers (see the module docstring). ``d``: (N+1, N+1)."""
    n = d.shape[0] - 1
    if not 1 <= target <= n:
        raise ValueError(f"cannot group {n} layers into {target}: pick 1..{n}")
    cap = max_size or max(2, 2 * math.ceil(n / target))
    groups: Groups = [[i] for i in range(n)]
    while len(groups) > target:
        best, best_cost = None, math.inf
        for j in range(len(groups) - 1):
            a, b = groups[j][0], groups[j + 1][-1] + 1
            if b - a > cap:
                continue
            if d[a, b] < best_cost - 1e-12:
                best, best_cost = j, d[a, b]
        if best is None:  # the cap forbids every merge: relax it rather than fail
            cap += 1
            continue
        groups[best : best + 2] = [groups[best] + groups[best + 1]]
    return groups


def best_members(groups: Groups, influence: Sequence[float]) -> List[int]:
    """The most influential source layer of each group (ties: the first)."""
    return [max(g, key=lambda i: (influence[i], -i)) for g in groups]
