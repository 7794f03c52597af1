"""End-to-end healing from a teacher cache: KL to the source's cached top-k distribution.

The paper heals a merged model with SGT cross-entropy on data; on a pretrained model that signal
is both weak (one token per position) and slow to learn from. Here the compressed model learns the
*source's* next-token distribution over its top k tokens (``training.topk_kd``: temperature, the
SGT weighting via ``lam``), on rows the source was run over once (``cherry-mlx teacher build``).

Only the blocks train by default: the embedding (tied to the LM head in most small models) and the
final norm are the source's, already right, and freezing them spares their optimizer state.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from cherry_mlx.selection.losses import per_token_ce, sgt_loss
from cherry_mlx.training.step import lr_schedule, make_step
from cherry_mlx.training.topk_kd import make_kd_loss, to_mx

KD_KEYS = ("inputs", "targets", "response", "level", "topk_idx", "topk_val", "lse")


def distill(
    model: nn.Module,
    cache,
    steps: int,
    lr: float = 1e-4,
    batch_size: int = 4,
    temperature: float = 1.0,
    lam: float = 0.0,
    mode: str = "renorm",
    objective: str = "distill",
    seed: int = 0,
    rows: Optional[Sequence[int]] = None,
    train_embeddings: bool = False,
    on_eval: Optional[Callable[[int], Dict[str, float]]] = None,
    eval_every: int = 0,
    log: Callable[[str], None] = print,
) -> List[Dict[str, float]]:
    """``steps`` AdamW updates of ``model`` (in place) on the cached top-k KL (``objective``
    "distill") or on the paper's SGT cross-entropy over the same rows ("sgt", λ = ``lam``: the
    reference arm at equal tokens); ``on_eval(step)`` runs every ``eval_every`` steps and at the
    end (its dict joins the history)."""
    import mlx.optimizers as optim

    if steps <= 0:
        return []
    model.train()
    if not train_embeddings:
        model.freeze(keys=None)
        for layer in model.layers:
            layer.unfreeze()
    opt = optim.AdamW(learning_rate=lr_schedule(lr, steps, max(steps // 10, 1), 0.1),
                      weight_decay=0.0)  # fmt: skip
    if objective == "distill":
        loss_fn = make_kd_loss(temperature, lam, mode)
    elif objective == "sgt":
        loss_fn = lambda m, b: sgt_loss(m, b, lam=lam)  # noqa: E731
    else:
        raise ValueError(f"--heal-with {objective!r}: use distill or sgt")
    step, state = make_step(model, opt, loss_fn, grad_clip=1.0)
    it = cache.batches(batch_size, seed=seed, epochs=None, keys=KD_KEYS, rows=rows)
    history, t0, tokens = [], time.perf_counter(), 0
    for s in range(steps):
        b = next(it)
        tokens += int(b["response"].sum())
        loss, _, _, _ = step(to_mx(b), None, True)
        mx.eval(loss, state)
        last = s == steps - 1
        if s % max(steps // 10, 1) == 0 or last:
            log(f"  distill step {s + 1}/{steps}: KL {loss.item():.4f}")
        if on_eval and ((eval_every and (s + 1) % eval_every == 0) or last):
            model.eval()
            row = {"step": s + 1, "tokens": tokens, "kl": loss.item(),
                   "seconds": time.perf_counter() - t0, **on_eval(s + 1)}  # fmt: skip
            history.append(row)
            model.train()
    model.unfreeze()
    model.eval()
    return history


def rows_loss(model: nn.Module, rows: Dict[str, np.ndarray], batch_size: int = 8) -> float:
    """Mean cross-entropy over supervised positions of fixed-length rows (held-out loss)."""
    total, count = 0.0, 0.0
    for s in range(0, len(rows["inputs"]), batch_size):
        x = mx.array(rows["inputs"][s : s + batch_size])
        y = mx.array(rows["targets"][s : s + batch_size])
        w = mx.array(rows["response"][s : s + batch_size].astype(np.float32))
        ce = per_token_ce(model(x), y)  # (B, T)
        part = (ce * w).sum()
        mx.eval(part)
        total += part.item()
        count += float(w.sum().item())
    return total / max(count, 1.0)
