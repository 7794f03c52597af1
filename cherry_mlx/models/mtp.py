"""Oracle multi-token prediction (MTP) heads, DeepSeek-V3 style (SPEC Phase 3).

Head k (k = 1..K) at position t combines the previous state (the trunk's final hidden state h0_t
for k = 1, head k-1's output h_{k-1,t} otherwise) with the embedding of token t+k,

    h_k = Block_k( W_k [ RMSNorm(h_{k-1,t}) ; RMSNorm(emb(x_{t+k})) ] )        (concat + projection)

runs one transformer block (the trunk family's mlx-lm block, causal attention over head k's own
states) and predicts token t+k+1 through the *shared* LM head after its own final norm. In training
x_{t+k} is the true ("oracle") token; in self-speculative decoding it is the token drafted by head
k-1. Weights live under the ``mtp.`` prefix; only the MTP loss and the drafter use them, the
trunk's forward pass never does.

Sequence form used by the loss: for inputs x_0..x_{L-1} head k has L-k positions t = 0..L-k-1
(token t+k = inputs[t+k], target token t+k+1 = targets[t+k]).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.base import create_attention_mask
from mlx_lm.models.cache import KVCache

from ..selection.losses import per_token_ce
from .families import make_block

DEFAULT_NUM_HEADS = 3


def num_heads(mtp: Optional[Dict[str, Any]]) -> int:
    """K from a config's ``mtp`` key (``{"num_heads": K}``; default 3)."""
    if not mtp:
        return 0
    k = int(mtp.get("num_heads", DEFAULT_NUM_HEADS))
    if k < 1:
        raise ValueError(f"mtp.num_heads must be >= 1, got {k}; set e.g. {{'num_heads': 3}}")
    return k


class MTPHead(nn.Module):
    """One sequential MTP module: two norms, a 2D -> D projection, a block and an output norm."""

    def __init__(self, args):
        super().__init__()
        d, eps = args.hidden_size, args.rms_norm_eps
        self.hnorm = nn.RMSNorm(d, eps=eps)
        self.enorm = nn.RMSNorm(d, eps=eps)
        self.proj = nn.Linear(2 * d, d, bias=False)
        self.block = make_block(args)
        self.norm = nn.RMSNorm(d, eps=eps)

    def __call__(self, h_prev: mx.array, emb: mx.array, cache=None) -> mx.array:
        """(B, L, D) previous states, (B, L, D) token embeddings -> (B, L, D) normed head states."""
        x = self.proj(mx.concatenate([self.hnorm(h_prev), self.enorm(emb)], axis=-1))
        mask = create_attention_mask(x, cache)
        return self.norm(self.block(x, mask, cache=cache))


class MTPHeads(nn.Module):
    """K sequential heads; ``model.mtp`` when the config has an ``mtp`` key."""

    def __init__(self, args):
        super().__init__()
        self.heads = [MTPHead(args) for _ in range(num_heads(args.mtp))]

    @property
    def num_heads(self) -> int:
        return len(self.heads)

    def make_cache(self) -> List[KVCache]:
        return [KVCache() for _ in self.heads]

    def sequence_states(self, model, h0: mx.array, inputs: mx.array) -> List[mx.array]:
        """Training (oracle) form. (B, L, D) trunk states, (B, L) inputs -> K arrays (B, L-k, D)."""
        emb = model.model.embed_tokens(inputs)  # (B, L, D), shared embedding
        states, h = [], h0
        for k, head in enumerate(self.heads, start=1):
            L = inputs.shape[1]
            if L - k <= 0:
                break
            h = head(h[:, : L - k], emb[:, k:])  # (B, L-k, D)
            states.append(h)
        return states


def add_mtp_heads(model, num: int = DEFAULT_NUM_HEADS) -> None:
    """Give an existing model K fresh (random) heads, e.g. to train them on a frozen trunk."""
    model.args.mtp = {**(model.args.mtp or {}), "num_heads": int(num)}
    model.mtp = MTPHeads(model.args)
    mx.eval(model.mtp.parameters())


def has_mtp(model) -> bool:
    return getattr(model, "mtp", None) is not None


# ---------------------------------------------------------------- training loss and accuracy


def mtp_loss(model, batch, beta: float = 0.3, lam: float = 0.7, freeze_trunk: bool = False):
    """Trunk SGT loss (Eq. 2; λ = 0 gives L_full) + β · mean over heads of their response-token CE.

    Head k's target at sequence position t is ``targets[t+k]``, supervised where ``response[t+k]``
    (the same response positions the trunk supervises, shifted by k). With ``freeze_trunk`` the
    trunk's states are a constant (``stop_gradient``) so only the heads learn; pair it with
    ``freeze_for_mtp(model)`` so the optimizer holds no trunk state. ``(model, batch) -> (loss,
    ntoks)``, the trainer's loss_fn contract; ntoks counts trunk response tokens.
    """
    from ..selection.losses import gt_mask, sgt_loss_from_ce

    h0 = model.hidden(batch["inputs"])  # (B, L, D)
    if freeze_trunk:
        h0 = mx.stop_gradient(h0)
    ce = per_token_ce(model.logits(h0), batch["targets"])  # (B, L)
    loss, ntoks = sgt_loss_from_ce(ce, batch["response"], gt_mask(batch), lam)
    if not has_mtp(model) or beta == 0:
        return loss, ntoks
    head_losses = []
    for k, hk in enumerate(model.mtp.sequence_states(model, h0, batch["inputs"]), start=1):
        resp = batch["response"][:, k:].astype(mx.float32)  # (B, L-k)
        ce_k = per_token_ce(model.logits(hk), batch["targets"][:, k:])
        head_losses.append((ce_k * resp).sum() / mx.maximum(resp.sum(), 1.0))
    if head_losses:
        loss = loss + beta * sum(head_losses) / len(head_losses)
    return loss, ntoks


class _Tap:
    """Stands in for the model inside a trunk loss and keeps the trunk's hidden states, so the
    heads reuse them instead of running the trunk twice."""

    def __init__(self, model, freeze_trunk: bool):
        self.model, self.freeze_trunk, self.h = model, freeze_trunk, None

    def hidden(self, inputs, cache=None, input_embeddings=None):
        self.h = self.model.hidden(inputs, cache, input_embeddings)
        return self.h

    def logits(self, h):
        return self.model.logits(h)

    def __call__(self, inputs, cache=None, input_embeddings=None):
        return self.logits(self.hidden(inputs, cache, input_embeddings))


class MTPLoss:
    """Any trunk loss (e.g. the trainer's ``SGTLoss`` with its selection control) + β · mean head
    CE on response positions: ``(model, batch) -> (loss, ntoks)``, a drop-in ``loss_fn``.

    ``targets="data"`` trains head k on the true token t+k+1 (the paper's oracle MTP);
    ``targets="trunk"`` on the trunk's own greedy prediction there (self-distillation): a draft is
    accepted when it equals the trunk's choice, so this aims the heads at acceptance directly.
    """

    def __init__(self, base, beta: float = 0.3, freeze_trunk: bool = False, targets: str = "data"):
        if beta < 0:
            raise ValueError(f"--mtp-weight must be >= 0, got {beta}")
        if targets not in ("data", "trunk"):
            raise ValueError(f"--mtp-targets {targets!r}: use data or trunk")
        self.base, self.beta, self.freeze_trunk = base, float(beta), freeze_trunk
        self.targets = targets

    def needed(self, batch):
        # Heads need the trunk states at every position: no sparse logit gathering.
        import numpy as np

        return np.ones(np.asarray(batch["response"]).shape, bool)

    def __call__(self, model, batch):
        tap = _Tap(model, self.freeze_trunk)
        view = {k: v for k, v in batch.items() if k not in ("pos", "pos_valid")}
        loss, ntoks = self.base(tap, view)
        if self.beta == 0 or not has_mtp(model):
            return loss, ntoks
        h0 = tap.h if tap.h is not None else model.hidden(batch["inputs"])
        if self.freeze_trunk:
            h0 = mx.stop_gradient(h0)
        targets = batch["targets"]  # (B, L)
        if self.targets == "trunk":  # the trunk's greedy next token at every position
            targets = mx.stop_gradient(mx.argmax(model.logits(h0), axis=-1))
        losses = []
        for k, hk in enumerate(model.mtp.sequence_states(model, h0, batch["inputs"]), start=1):
            resp = batch["response"][:, k:].astype(mx.float32)  # (B, L-k)
            ce_k = per_token_ce(model.logits(hk), targets[:, k:])
            losses.append((ce_k * resp).sum() / mx.maximum(resp.sum(), 1.0))
        return loss + self.beta * sum(losses) / max(len(losses), 1), ntoks


def prepare_mtp_training(model, num_heads: int, beta: float, freeze_trunk: bool, base_loss):
    """The trainer's hook for ``--mtp K --mtp-weight β [--freeze-trunk]``: give the model K heads
    if it has none (or another number), freeze the trunk if asked, and wrap the trunk loss."""
    if num_heads < 1:
        raise ValueError(f"--mtp {num_heads}: use K >= 1 heads (0 disables MTP)")
    ensure_mtp_heads(model, num_heads)
    if freeze_trunk:
        freeze_for_mtp(model)
    return MTPLoss(base_loss, beta, freeze_trunk)


def freeze_for_mtp(model) -> None:
    """Freeze everything but the heads (adding heads to an existing model)."""
    if not has_mtp(model):
        raise ValueError("model has no MTP heads; add them first (add_mtp_heads or --mtp K)")
    model.freeze()
    model.mtp.unfreeze()


def mtp_accuracy(model, batches) -> Dict[str, Any]:
    """Top-1 accuracy of the trunk (next token) and of each head (token t+k+1) on response
    positions of held-out batches, and each head's agreement with the trunk's own greedy token
    there (a proxy of greedy draft acceptance):
    ``{"trunk": a0, "heads": [a1, ..., aK], "agree": [g1, ..., gK], "tokens": n}``."""
    if not has_mtp(model):
        raise ValueError("model has no MTP heads (config key 'mtp'); nothing to evaluate")
    K = model.mtp.num_heads
    hits, agree, counts = [0.0] * (K + 1), [0.0] * (K + 1), [0.0] * (K + 1)
    for batch in batches:
        h0 = model.hidden(batch["inputs"])
        states = [h0] + model.mtp.sequence_states(model, h0, batch["inputs"])
        trunk = None
        for k, hk in enumerate(states):
            resp = batch["response"][:, k:]
            pred = mx.argmax(model.logits(hk), axis=-1)  # (B, L-k)
            trunk = pred if k == 0 else trunk
            hits[k] += ((pred == batch["targets"][:, k:]) & resp).astype(mx.float32).sum().item()
            agree[k] += ((pred == trunk[:, k:]) & resp).astype(mx.float32).sum().item()
            counts[k] += resp.astype(mx.float32).sum().item()
    acc = [h / max(c, 1.0) for h, c in zip(hits, counts)]
    agr = [g / max(c, 1.0) for g, c in zip(agree, counts)]
    return {"trunk": acc[0], "heads": acc[1:], "agree": agr[1:], "tokens": int(counts[0])}


def ensure_mtp_heads(model, num: int) -> Dict[str, Any]:
    """Add ``num`` fresh heads unless the model already has that many; returns the config key."""
    if not has_mtp(model) or model.mtp.num_heads != num:
        add_mtp_heads(model, num)
    return dict(model.args.mtp)


def report_mtp_accuracy(model, batches, run_dir=None) -> str:
    """Per-head held-out accuracy as one line (and ``mtp_accuracy.json`` in the run dir)."""
    import json
    from pathlib import Path

    acc = mtp_accuracy(model, batches)
    if run_dir is not None:
        (Path(run_dir) / "mtp_accuracy.json").write_text(json.dumps(acc, indent=2) + "\n")
    heads = ", ".join(
        f"head {k} (t+{k + 1}) {a:.1%} (agrees with trunk {g:.1%})"
        for k, (a, g) in enumerate(zip(acc["heads"], acc["agree"]), 1)
    )
    return f"[mtp] held-out top-1: trunk (t+1) {acc['trunk']:.1%}, {heads} ({acc['tokens']} tok)"
