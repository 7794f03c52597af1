"""The one MTP loss: the trunk's loss + β · mean over heads of each head's SGT loss (Eq. 2).

Head k predicts token t+k+1 from position t (``models.mtp``), so it is supervised on the response
mask shifted by k and weighted by the same Eq. 2 as the trunk: per example
``λ·L_GT + (1-λ)·L_full`` over the shifted GT / response positions, falling back to L_full for an
example without GT tokens. ``train --mtp``, ``fuse`` and ``distill`` all use this definition.

    L = L_trunk + β · (1/K) Σ_k L_SGT(head k)
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import mlx.core as mx
import numpy as np

from cherry_mlx.models.mtp import has_mtp
from cherry_mlx.selection.losses import gt_mask, per_token_ce, sgt_loss_from_ce

TARGETS = ("data", "trunk")


def head_losses(
    model,
    h0: mx.array,
    batch,
    lam: float,
    level: int = 1,
    categories: Optional[Sequence[str]] = None,
    targets: Optional[mx.array] = None,
) -> List[mx.array]:
    """Eq. 2 per head. h0: (B, L, D) trunk states; ``targets`` (B, L) default batch targets."""
    targets = batch["targets"] if targets is None else targets
    gt = gt_mask(batch, level, categories)  # (B, L)
    out = []
    for k, hk in enumerate(model.mtp.sequence_states(model, h0, batch["inputs"]), start=1):
        ce = per_token_ce(model.logits(hk), targets[:, k:])  # (B, L-k): predicts t+k+1
        loss, _ = sgt_loss_from_ce(ce, batch["response"][:, k:], gt[:, k:], lam)
        out.append(loss)
    return out


def mtp_head_loss(model, h0: mx.array, batch, lam: float, level: int = 1, categories=None):
    """Mean over heads of ``head_losses`` (0 for a model without heads)."""
    if not has_mtp(model):
        return mx.array(0.0)
    losses = head_losses(model, h0, batch, lam, level, categories)
    return sum(losses) / max(len(losses), 1)


def mtp_loss(model, batch, beta: float = 0.3, lam: float = 0.7, freeze_trunk: bool = False):
    """Trunk SGT loss (Eq. 2 on tagged GT) + β · the heads' SGT loss, as one function.

    With ``freeze_trunk`` the trunk's states are a constant (``stop_gradient``) so only the heads
    learn. ``(model, batch) -> (loss, ntoks)``; ntoks counts trunk response tokens.
    """
    h0 = model.hidden(batch["inputs"])  # (B, L, D)
    if freeze_trunk:
        h0 = mx.stop_gradient(h0)
    ce = per_token_ce(model.logits(h0), batch["targets"])  # (B, L)
    loss, ntoks = sgt_loss_from_ce(ce, batch["response"], gt_mask(batch), lam)
    if not has_mtp(model) or beta == 0:
        return loss, ntoks
    return loss + beta * mtp_head_loss(model, h0, batch, lam), ntoks


class _Tap:
    """Stands in for the model inside a trunk loss and keeps the trunk's hidden states, so the
    heads reuse them instead of running the trunk twice."""

    def __init__(self, model):
        self.model, self.h = model, None

    def hidden(self, inputs, cache=None, input_embeddings=None):
        self.h = self.model.hidden(inputs, cache, input_embeddings)
        return self.h

    def logits(self, h):
        return self.model.logits(h)

    def __call__(self, inputs, cache=None, input_embeddings=None):
        return self.logits(self.hidden(inputs, cache, input_embeddings))


class MTPLoss:
    """Any trunk loss (e.g. ``SGTLoss`` with its selection control) + β · mean head SGT loss:
    ``(model, batch) -> (loss, ntoks)``, a drop-in ``loss_fn``.

    The heads take λ, level and categories from the trunk loss when it has them (``SGTLoss``
    does; ``select="all"`` means plain cross-entropy, λ = 0). ``targets="data"`` trains head k on
    the true token t+k+1 (the paper's oracle MTP); ``targets="trunk"`` on the trunk's own greedy
    prediction there (self-distillation): a draft is accepted when it equals the trunk's choice.
    """

    def __init__(self, base, beta: float = 0.3, freeze_trunk: bool = False, targets: str = "data"):
        if beta < 0:
            raise ValueError(f"--mtp-weight must be >= 0, got {beta}")
        if targets not in TARGETS:
            raise ValueError(f"--mtp-targets {targets!r}: use data or trunk")
        self.base, self.beta, self.freeze_trunk = base, float(beta), freeze_trunk
        self.targets = targets
        all_tokens = getattr(base, "select", "gt") == "all"
        self.lam = 0.0 if all_tokens else float(getattr(base, "lam", 0.7))
        self.level = int(getattr(base, "level", 1))
        self.categories = getattr(base, "categories", None)

    def needed(self, batch):
        # Heads need the trunk states at every position: no sparse logit gathering.
        return np.ones(np.asarray(batch["response"]).shape, bool)

    def extras(self, batch) -> dict:
        fn = getattr(self.base, "extras", None)
        return fn(batch) if fn is not None else {}

    def __call__(self, model, batch):
        tap = _Tap(model)
        view = {k: v for k, v in batch.items() if k not in ("pos", "pos_valid")}
        loss, ntoks = self.base(tap, view)
        if self.beta == 0 or not has_mtp(model):
            return loss, ntoks
        h0 = tap.h if tap.h is not None else model.hidden(batch["inputs"])
        if self.freeze_trunk:
            h0 = mx.stop_gradient(h0)
        targets = None
        if self.targets == "trunk":  # the trunk's greedy next token at every position
            targets = mx.stop_gradient(mx.argmax(model.logits(h0), axis=-1))
        losses = head_losses(model, h0, batch, self.lam, self.level, self.categories, targets)
        return loss + self.beta * sum(losses) / max(len(losses), 1), ntoks
