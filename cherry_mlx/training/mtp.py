"""The one MTP loss: the trunk's loss + β · mean over heads of each head's SGT loss (Eq. 2).

Head k predicts token t+k+1 from position t (``models.mtp``), so it is supervised on the response
mask shifted by k and weighted by the same Eq. 2 as the trunk: per example
``λ·L_GT + (1-λ)·L_full`` over the shifted GT / response positions, falling back to L_full for an
example without GT tokens. ``train --mtp``, ``fuse`` and ``distill`` all use this definition.

    L = L_trunk + β · (1/K) Σ_k [ L_SGT(head k) + w_f · L_feat(head k) ]

``L_feat`` (off unless ``--mtp-feature-weight`` w_f > 0) is EAGLE's feature regression: smooth-L1
between head k's state at t and the trunk's state at t+k (the state whose LM-head row choice the
head must reproduce), averaged over the same response positions. It gives the heads a dense
target (D numbers per position instead of one token), which EAGLE found speeds up learning to
agree with the trunk.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from cherry_mlx.models.mtp import draft_rows, draft_vocab, has_mtp
from cherry_mlx.selection.losses import gt_mask, per_token_ce, sgt_loss_from_ce

TARGETS = ("data", "trunk")


def feature_loss(hk: mx.array, target: mx.array, mask: mx.array) -> mx.array:
    """Smooth-L1 between head states and (constant) trunk states, mean over D, masked mean over
    positions. (B, L, D), (B, L, D), (B, L) -> ()."""
    per = nn.losses.smooth_l1_loss(
        hk.astype(mx.float32), mx.stop_gradient(target).astype(mx.float32), reduction="none"
    ).mean(axis=-1)  # (B, L)
    m = mask.astype(mx.float32)
    return (per * m).sum() / mx.maximum(m.sum(), 1.0)


def head_losses(
    model,
    h0: mx.array,
    batch,
    lam: float,
    level: int = 1,
    categories: Optional[Sequence[str]] = None,
    targets: Optional[mx.array] = None,
    feature_weight: float = 0.0,
) -> List[mx.array]:
    """Eq. 2 per head (+ ``feature_weight`` · feature regression). h0: (B, L, D) trunk states;
    ``targets`` (B, L) default batch targets."""
    targets = batch["targets"] if targets is None else targets
    gt = gt_mask(batch, level, categories)  # (B, L)
    out = []
    for k, hk in enumerate(model.mtp.sequence_states(model, h0, batch["inputs"]), start=1):
        ce = per_token_ce(model.logits(hk), targets[:, k:])  # (B, L-k): predicts t+k+1
        loss, _ = sgt_loss_from_ce(ce, batch["response"][:, k:], gt[:, k:], lam)
        if feature_weight:  # the trunk's state at t+k predicts the same token t+k+1
            loss = loss + feature_weight * feature_loss(hk, h0[:, k:], batch["response"][:, k:])
        out.append(loss)
    return out


def mtp_head_loss(model, h0: mx.array, batch, lam: float, level: int = 1, categories=None):
    """Mean over heads of ``head_losses`` (0 for a model without heads)."""
    if not has_mtp(model):
        return mx.array(0.0)
    losses = head_losses(model, h0, batch, lam, level, categories)
    return sum(losses) / max(len(losses), 1)


def mtp_loss(
    model,
    batch,
    beta: float = 0.3,
    lam: float = 0.7,
    freeze_trunk: bool = False,
    feature_weight: float = 0.0,
):
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
    heads = head_losses(model, h0, batch, lam, feature_weight=feature_weight)
    return loss + beta * sum(heads) / max(len(heads), 1), ntoks


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

    def __init__(
        self,
        base,
        beta: float = 0.3,
        freeze_trunk: bool = False,
        targets: str = "data",
        feature_weight: float = 0.0,
    ):
        if beta < 0:
            raise ValueError(f"--mtp-weight must be >= 0, got {beta}")
        if feature_weight < 0:
            raise ValueError(f"--mtp-feature-weight must be >= 0, got {feature_weight}")
        self.feature_weight = float(feature_weight)
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
        losses = head_losses(
            model, h0, batch, self.lam, self.level, self.categories, targets, self.feature_weight
        )
        return loss + self.beta * sum(losses) / max(len(losses), 1), ntoks


def context_mask(response: mx.array) -> mx.array:
    """Every position up to a row's last response token: prompt and response, not padding (which
    only follows the response). (B, L) bool -> (B, L) bool."""
    r = response.astype(mx.int32)[:, ::-1]
    return mx.cumsum(r, axis=1)[:, ::-1] > 0


class HeadDistillLoss:
    """Heads trained on a frozen trunk to reproduce its greedy tokens (``--freeze-trunk
    --mtp-targets trunk``): ``(model, batch) -> (loss, ntoks)``, the mean over heads of

        CE(head k's scores at t, trunk's greedy token t+k+1) + w_f · L_feat(head k)

    over every prompt and response position (a draft must match the trunk wherever it decodes;
    the prompt doubles the supervised tokens). The trunk's loss is left out: with the trunk frozen
    it is a constant, and computing it costs a full-vocabulary projection per step. When the
    model has a draft vocabulary the heads are scored against its rows only (N of V, as they
    draft), a position whose trunk token lies outside it does not count: on SmolLM2 (V = 49,152,
    N = 4,096) a step costs one trunk forward pass instead of K + 1 full projections both ways.
    """

    def __init__(self, feature_weight: float = 0.0):
        if feature_weight < 0:
            raise ValueError(f"--mtp-feature-weight must be >= 0, got {feature_weight}")
        self.feature_weight = float(feature_weight)
        self._vocab = None  # (draft ids, (V,) full id -> draft id or -1, ids as an array)

    def needed(self, batch):
        return np.ones(np.asarray(batch["response"]).shape, bool)

    def _draft_index(self, ids, V: int):
        if self._vocab is None or self._vocab[0] != ids:
            index = np.full(V, -1, np.int32)
            index[np.asarray(ids)] = np.arange(len(ids), dtype=np.int32)
            self._vocab = (ids, mx.array(index), mx.array(ids, dtype=mx.int32))
        return self._vocab[1], self._vocab[2]

    def __call__(self, model, batch):
        if not has_mtp(model):
            raise ValueError("model has no MTP heads to train; add them (--mtp K)")
        h0 = mx.stop_gradient(model.hidden(batch["inputs"]))  # (B, L, D)
        greedy = mx.stop_gradient(mx.argmax(model.logits(h0), axis=-1))  # (B, L): token t+1
        valid = context_mask(batch["response"])  # (B, L)
        loss = self.from_states(model, h0, greedy, batch["inputs"], valid)
        return loss, valid.astype(mx.float32).sum()

    def from_states(self, model, h0, greedy, inputs, valid, per_head: bool = False):
        """The loss from the trunk's states h0 (B, L, D) and greedy next tokens (B, L) (computed
        here or read from a cache of them), inputs (B, L), valid (B, L) bool -> () (or one loss
        per head with ``per_head``)."""
        ids = draft_vocab(model.args.mtp)
        if ids:
            index, id_array = self._draft_index(ids, model.args.vocab_size)  # (V,), (N,)
            w = mx.stop_gradient(draft_rows(model, id_array))  # (N, D)
        losses = []
        for k, hk in enumerate(model.mtp.sequence_states(model, h0, inputs), start=1):
            tgt, m = greedy[:, k:], valid[:, k:]  # trunk's token t+k+1 at t; (B, L-k)
            if ids:
                tgt = index[tgt]
                m = m & (tgt >= 0)
                ce = per_token_ce(hk @ w.T, mx.maximum(tgt, 0))  # (B, L-k) over N tokens
            else:
                ce = per_token_ce(model.logits(hk), tgt)
            mf = m.astype(mx.float32)
            loss = (ce * mf).sum() / mx.maximum(mf.sum(), 1.0)
            if self.feature_weight:
                loss = loss + self.feature_weight * feature_loss(hk, h0[:, k:], m)
            losses.append(loss)
        if per_head:
            return losses
        return sum(losses) / max(len(losses), 1)
