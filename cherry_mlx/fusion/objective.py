"""Training objective of a MoEE: SGT loss + α·balance + β·MTP, as a ``(model, batch)`` loss.

``L = L_SGT(mixture) + α·mean_calls(N·Σ f_i P_i) + β·mean_k L_SGT(MTP head k)``

- The SGT term is Eq. 2 on the mixture's logits (``sgt=False`` uses plain L_full, the ablation's
  "experts alone" rung).
- The balance term averages over routing decisions: one for model granularity, one per block call
  for layer granularity (a looped core layer routes once per loop).
- MTP head k predicts target t+k+1 from position t: the one MTP loss of ``training.mtp`` (the
  same Eq. 2 weights on the shifted response/GT masks).
All terms keep the ``(loss, ntoks)`` contract: normalised by response tokens, float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from cherry_mlx.models.gate import balance_loss
from cherry_mlx.selection.losses import gt_mask, per_token_ce, sgt_loss_from_ce
from cherry_mlx.training.mtp import mtp_head_loss


@dataclass
class MoEEObjective:
    """Weights of the MoEE loss terms (the ablation ladder switches them on one by one)."""

    lam: float = 0.7  # λ of Eq. 2
    alpha: float = 0.01  # load-balancing weight (Switch Transformer's default)
    beta: float = 0.3  # MTP loss weight
    level: int = 1  # supervise GT level >= level
    sgt: bool = True  # False: plain response-token cross-entropy (λ = 0)


def route(model, inputs):
    """(h, aux) for MoEE models; plain models route nowhere (aux = [])."""
    if hasattr(model, "route"):
        return model.route(inputs)
    return model.hidden(inputs), []


def make_loss(obj: MoEEObjective) -> Callable:
    """``loss_fn(model, batch) -> (loss, ntoks)`` for the trainer's compiled step."""
    lam = obj.lam if obj.sgt else 0.0

    def loss_fn(model, batch):
        h, aux = route(model, batch["inputs"])
        ce = per_token_ce(model.logits(h), batch["targets"])  # (B, T)
        loss, ntoks = sgt_loss_from_ce(ce, batch["response"], gt_mask(batch, obj.level), lam)
        if obj.alpha and aux:
            bal = sum(balance_loss(p, i, batch["response"], 1.0) for p, i in aux) / len(aux)
            loss = loss + obj.alpha * bal
        if obj.beta and getattr(model, "mtp", None) is not None:
            loss = loss + obj.beta * mtp_head_loss(model, h, batch, lam, obj.level)
        return loss, ntoks

    return loss_fn
