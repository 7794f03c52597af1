"""The training objective a ``TrainConfig`` asks for, built once: the trainer itself knows no loss.

``--select`` / ``--lambda`` / ``--level`` / ``--categories`` choose the SGT loss and its selection
control (Rho-1 holds its frozen reference model); ``--mtp K`` wraps it in the one MTP loss;
``--mtp K --freeze-trunk --mtp-targets trunk`` trains only the heads, distilled from the trunk.
"""

from __future__ import annotations

from cherry_mlx.selection.select import make_loss
from cherry_mlx.training.config import TrainConfig
from cherry_mlx.training.mtp import HeadDistillLoss, MTPLoss


def make_objective(cfg: TrainConfig, reference=None):
    """``loss_fn(model, batch) -> (loss, ntoks)`` for ``cfg``; ``reference`` for ``rho1``."""
    loss = make_loss(cfg.select, cfg.lam, cfg.level_int, cfg.categories, reference=reference)
    if cfg.mtp and cfg.freeze_trunk and cfg.mtp_targets == "trunk":  # heads only, cheap
        return HeadDistillLoss(cfg.mtp_feature_weight)
    if cfg.mtp:  # trunk loss + β·mean MTP head loss
        loss = MTPLoss(
            loss, cfg.mtp_weight, cfg.freeze_trunk, cfg.mtp_targets, cfg.mtp_feature_weight
        )
    return loss


def with_extras(loss_fn):
    """The loss on host-prepared batches (evaluation): adds what ``loss_fn.extras`` computes
    outside the compiled step (e.g. Rho-1's reference loss) before calling it."""
    extras = getattr(loss_fn, "extras", None)
    if extras is None:
        return loss_fn

    def call(model, batch):
        return loss_fn(model, {**batch, **extras(batch)})

    return call
