"""Selection controls for the SGT loss (the paper's Limitation 9).

The paper never tests whether *which* tokens are supervised matters, only *how many*. These controls
keep the mixed loss of Eq. 2 and its supervised fraction fixed and change only the choice of the
"GT" positions:

    gt      the tagged GT positions (level >= --level, in --categories)
    random  k_b response positions drawn uniformly at random
    loss    the k_b response positions with the highest current loss (stop-gradient)
    rho1    the k_b response positions with the highest excess loss over a reference model
            (Rho-1: ce_model - ce_reference; the loss holds the frozen reference model and
            computes ``ref_ce`` outside the compiled step through ``extras``)
    all     every response position: λ·L_full + (1-λ)·L_full = L_full, the plain loss

k_b is the number of GT positions of example b, so the count matches per example (and therefore per
batch), and an example without GT tokens falls back to L_full under every control, as Eq. 2 says.

``SGTLoss`` is a ``(model, batch) -> (loss, ntoks)`` function. When the batch carries ``pos``
(flat indices into B*T, padded) and ``pos_valid``, logits are computed only there: the vocabulary
projection and softmax dominate a small model's step (~25 ns per element on MLX's CPU backend),
and prompt and padding positions never need them. ``needed(batch)`` tells the trainer which
positions to list.
"""

from __future__ import annotations

from typing import Optional, Sequence

import mlx.core as mx
import numpy as np

from cherry_mlx.data.categories import CATEGORIES, LEVELS
from cherry_mlx.selection.losses import gt_mask, per_token_ce, sgt_weights

SELECTIONS = ("gt", "random", "loss", "rho1", "all")


def topk_per_row(scores: mx.array, allowed: mx.array, k: mx.array) -> mx.array:
    """Mask of the k[b] highest-scoring allowed positions of each row. (B,T),(B,T),(B,) -> (B,T)"""
    s = mx.where(allowed, scores.astype(mx.float32), -mx.inf)
    order = mx.argsort(-s, axis=1)  # (B, T) positions by descending score
    rank = mx.argsort(order, axis=1)  # (B, T) rank of each position
    return (rank < k[:, None]) & allowed


def select_mask(
    select: str,
    batch,
    gt: mx.array,
    ce: Optional[mx.array] = None,
    key: Optional[mx.array] = None,
) -> mx.array:
    """The positions treated as GT by Eq. 2 under a selection control. Returns (B, T) bool.

    ``gt`` is the tagged GT mask (already restricted to response positions); ``ce`` the current
    per-token loss (needed by ``loss`` and ``rho1``); ``key`` the PRNG key of ``random``.
    """
    response = batch["response"]
    if select == "gt":
        return gt & response
    if select == "all":
        return response
    k = (gt & response).astype(mx.int32).sum(axis=1)  # (B,) GT count per example
    if select == "random":
        scores = mx.random.uniform(shape=response.shape, key=key)
    elif select == "loss":
        scores = mx.stop_gradient(ce)
    elif select == "rho1":
        if "ref_ce" not in batch:
            raise ValueError("--select rho1 needs the reference loss 'ref_ce' in the batch")
        scores = mx.stop_gradient(ce) - batch["ref_ce"]
    else:
        raise ValueError(f"unknown selection {select!r}; use one of {SELECTIONS}")
    return topk_per_row(scores, response, k)


class SGTLoss:
    """L_SGT = λ·L_GT + (1-λ)·L_full over the positions chosen by ``select`` (see module doc)."""

    def __init__(
        self,
        select: str = "gt",
        lam: float = 0.7,
        level: int = 1,
        categories: Optional[Sequence[str]] = None,
        reference=None,
    ):
        if select not in SELECTIONS:
            raise ValueError(f"unknown selection {select!r}; use one of {SELECTIONS}")
        if (select == "rho1") != (reference is not None):
            raise ValueError("--select rho1 needs a reference model, and only rho1 uses one")
        self.select, self.lam, self.level = select, float(lam), int(level)
        self.categories = list(categories) if categories else None
        self.reference = reference

    def extras(self, batch) -> dict:
        """Arrays computed outside the compiled step and added to the batch: Rho-1's reference
        loss ``ref_ce`` (B, T) (the frozen reference is a constant, not a trained input)."""
        if self.reference is None:
            return {}
        ce = per_token_ce(self.reference(batch["inputs"]), batch["targets"])
        return {"ref_ce": mx.stop_gradient(ce)}

    def needed(self, batch) -> np.ndarray:
        """(B, T) bool: positions whose logits the loss reads (numpy, outside the compiled step)."""
        response = np.asarray(batch["response"]).astype(bool)
        if self.lam == 1.0 and self.select == "gt":
            level = np.asarray(batch["level"]) >= self.level
            mask = response & level
            if self.categories is not None:
                cats = [CATEGORIES.index(c) for c in self.categories]
                mask &= np.isin(np.asarray(batch["category"]), cats)
            # an example without GT falls back to L_full: all its response positions
            return mask | (response & ~mask.any(axis=1, keepdims=True))
        return response

    def per_token(self, model, batch):
        return per_token_loss(model, batch)

    def __call__(self, model, batch):
        ce = self.per_token(model, batch)  # (B, T)
        response = batch["response"]
        gt = gt_mask(batch, self.level, self.categories)
        sel = select_mask(self.select, batch, gt, ce=ce, key=batch.get("key"))
        w = sgt_weights(response, sel, self.lam)  # (B, T)
        ntoks = response.astype(mx.float32).sum()
        return (w * ce).sum() / mx.maximum(ntoks, 1.0), ntoks


def per_token_loss(model, batch) -> mx.array:
    """Per-token cross-entropy (B, T) float32; with ``pos`` only there (zero elsewhere)."""
    inputs, targets = batch["inputs"], batch["targets"]
    B, T = targets.shape
    if "pos" not in batch:
        return per_token_ce(model(inputs), targets)
    pos, valid = batch["pos"], batch["pos_valid"]  # (N,), (N,)
    hidden = getattr(model, "hidden", None)
    if hidden is not None:
        h = hidden(inputs)  # (B, T, D)
        h = h.reshape(B * T, -1)[pos]  # (N, D)
        ce = per_token_ce(model.logits(h)[None], targets.reshape(-1)[pos][None])[0]  # (N,)
    else:  # models without the hidden/logits split: full logits, then gather
        ce = per_token_ce(model(inputs), targets).reshape(-1)[pos]
    ce = mx.where(valid, ce, 0.0)
    # Scatter back to (B, T); padding entries add 0 at index 0.
    return mx.zeros((B * T,), dtype=mx.float32).at[pos].add(ce).reshape(B, T)


def make_loss(select="gt", lam=0.7, level=1, categories=None, reference=None) -> SGTLoss:
    """The loss of a selection control; ``level`` is an int or 'gt' / 'super' / 'ssgt'."""
    if isinstance(level, str):
        level = LEVELS[level]
    return SGTLoss(select, lam, level, categories, reference)
