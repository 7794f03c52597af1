"""The optimiser, its schedule and the one compiled training step.

One ``mx.compile``d function per micro-batch does forward, backward and (on the last micro-batch
of an update) gradient normalisation, clipping and the AdamW update. Model, optimiser and PRNG
state are the compiled function's implicit state, exactly as in mlx-lm's trainer, so nothing is
copied per step and the caller does one ``mx.eval`` per micro-batch.

Gradient accumulation is token-weighted: each micro-batch contributes ``grad · ntoks`` and the sum
is divided by the total ``ntoks`` at the update. Because the losses are normalised by supervised
tokens, k micro-batches of B/k examples give the same update as one batch of B (up to float
rounding), which a plain mean of micro-batch means would not when their token counts differ.
"""

from __future__ import annotations

import math
from functools import partial

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_map

from cherry_mlx.training.distributed import all_sum_tokens


def lr_schedule(peak: float, steps: int, warmup: int, min_ratio: float):
    """Linear warmup to ``peak`` over ``warmup`` updates, then cosine decay to ``peak*min_ratio``.

    Update s (0-based) uses lr(s) = peak·(s+1)/warmup during warmup (so the first update is not
    wasted at lr 0), then peak·(m + (1-m)·½(1+cos(π·p))) with p = (s-warmup)/(steps-warmup).
    """
    warmup = max(int(warmup), 0)
    span = max(int(steps) - warmup, 1)

    def schedule(step):
        s = mx.array(step).astype(mx.float32)
        warm = (s + 1.0) / max(warmup, 1)
        prog = mx.clip((s - warmup) / span, 0.0, 1.0)
        cos = min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + mx.cos(math.pi * prog))
        return peak * mx.where(s < warmup, warm, cos)

    return schedule


def make_optimizer(cfg) -> optim.Optimizer:
    """``cfg.optimizer``: AdamW (two moments per weight), Adafactor (a factored second moment
    and no first: a few floats per matrix row and column) or plain SGD (no state). The last two
    are what lets a 1.4B model train in fp32 on 24 GiB (``models/memory.py``)."""
    lr = lr_schedule(cfg.learning_rate, cfg.steps, cfg.warmup, cfg.min_lr_ratio)
    name = getattr(cfg, "optimizer", "adamw")
    if name == "adafactor":  # our schedule, not Adafactor's relative step or parameter scaling
        return optim.Adafactor(
            learning_rate=lr, relative_step=False, scale_parameter=False,
            weight_decay=cfg.weight_decay,
        )  # fmt: skip
    if name == "sgd":
        return PlainSGD(learning_rate=lr, weight_decay=cfg.weight_decay)
    return optim.AdamW(learning_rate=lr, weight_decay=cfg.weight_decay)


class PlainSGD(optim.SGD):
    """SGD without momentum and without state: MLX's SGD keeps a velocity buffer per weight
    even at momentum 0 (one more copy of the model), which plain SGD never reads."""

    def init_single(self, parameter: mx.array, state: dict) -> None:
        pass

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        if self.weight_decay != 0:
            gradient = gradient + self.weight_decay * parameter
        return parameter - self.learning_rate.astype(gradient.dtype) * gradient


def make_step(model, optimizer, loss_fn, grad_clip: float = 0.0, group=None):
    """Compiled ``step(batch, acc, do_update) -> (loss, ntoks, acc_or_None, grad_norm)``.

    ``acc`` is the running (grad·ntoks sum, loss·ntoks sum, ntoks sum) of earlier micro-batches of
    this update (None for the first). With ``do_update`` the accumulated mean gradient is applied
    and ``loss`` is the update's token-weighted mean loss. With a distributed ``group`` the sums
    are taken over every rank's shard before the update (``distributed.all_sum_tokens``), and
    ``loss`` and ``ntoks`` are those of the global batch.
    """
    value_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state, mx.random.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(batch, acc, do_update):
        (loss, ntoks), grads = value_and_grad(model, batch)
        ntoks = ntoks.astype(mx.float32)
        loss = loss.astype(mx.float32)
        if acc is None and do_update and group is None:
            # a single micro-batch: its gradient already is the token-weighted mean
            return _apply(grads, loss, ntoks)
        grads = tree_map(lambda g: g * ntoks, grads)
        loss_sum = loss * ntoks
        if acc is not None:
            grads = tree_map(lambda a, b: a + b, grads, acc[0])
            loss_sum = loss_sum + acc[1]
            ntoks = ntoks + acc[2]
        denom = mx.maximum(ntoks, 1.0)
        if not do_update:
            return loss_sum / denom, ntoks, (grads, loss_sum, ntoks), mx.array(0.0)
        if group is not None:
            return _apply(*all_sum_tokens(grads, loss_sum, ntoks, group))
        return _apply(tree_map(lambda g: g / denom, grads), loss_sum / denom, ntoks)

    def _apply(grads, loss, ntoks):
        if grad_clip and grad_clip > 0:
            grads, norm = optim.clip_grad_norm(grads, grad_clip)
        else:  # no clipping: skip the extra pass over the gradients (norm reported as NaN)
            norm = mx.array(float("nan"))
        optimizer.update(model, grads)
        return loss, ntoks, None, norm

    return step, state
