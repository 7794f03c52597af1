"""Distillation-calibrated quantisation (DWQ): train the block scales of a quantised model so its
next-token distribution matches the full-precision teacher's.

The teacher's distribution is its top-k log-probabilities per position (normalised over the
whole vocabulary), read from the one teacher cache (``data.teacher_cache``, built by
``cherry-mlx teacher build`` or by ``quantize`` itself): ``topk_val - lse`` are exact
log-probabilities, so every student arm reads the same targets. The loss is the KL divergence
restricted to the teacher's top k tokens,

    L = mean over real (unpadded) positions of  Σ_{i ∈ top-k} p_i (log p_i − log q_i)

with q the student's full softmax (its normaliser sees every token, so mass the student puts
outside the teacher's top k is penalised through log q_i). The student is the fake-quantised
model (``fakequant.to_fake``): only the scale parameters get gradients.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from cherry_mlx.data.teacher_cache import TeacherCache

# tokens (N, T+1), idx (N, T, k) int32, logp (N, T, k) fp16, mask (N, T) bool (real positions)
Targets = Tuple[mx.array, mx.array, mx.array, mx.array]


def cache_targets(cache: TeacherCache, rows: Optional[Sequence[int]] = None) -> Targets:
    """The distillation targets of a teacher cache (all rows, or ``rows``): tokens (N, T+1),
    the top-k ids, their full-vocabulary log-probabilities and the real positions."""
    rows = range(cache.rows) if rows is None else rows
    b = cache.row_batch(rows, keys=("inputs", "targets", "length", "topk_idx", "topk_val", "lse"))
    tokens = np.concatenate([b["inputs"], b["targets"][:, -1:]], axis=1)  # (N, T+1)
    logp = b["topk_val"].astype(np.float32) - b["lse"][..., None]  # (N, T, k)
    mask = np.arange(b["inputs"].shape[1])[None] < b["length"][:, None]  # (N, T)
    return (mx.array(tokens), mx.array(b["topk_idx"].astype(np.int32)),
            mx.array(logp.astype(np.float16)), mx.array(mask))  # fmt: skip


def topk_kl(logits: mx.array, idx: mx.array, logp: mx.array, mask=None) -> mx.array:
    """Mean over positions (where ``mask`` (B, T) holds) of Σ_topk p (log p − log q); logits
    (B, T, V), idx/logp (B, T, k)."""
    logits = logits.astype(mx.float32)
    logq = mx.take_along_axis(logits, idx, axis=-1) - mx.logsumexp(logits, axis=-1, keepdims=True)
    lp = logp.astype(mx.float32)
    per = (mx.exp(lp) * (lp - logq)).sum(-1)  # (B, T)
    if mask is None:
        return per.mean()
    m = mask.astype(mx.float32)
    return (per * m).sum() / mx.maximum(m.sum(), 1.0)


@dataclass
class DistillConfig:
    steps: int = 200
    batch_size: int = 4
    lr: float = 2e-4  # 5e-3 measured worse than round-to-nearest: E4M3 scales flip
    warmup: int = 10
    seed: int = 0
    log_every: int = 10


@dataclass
class DistillState:
    """What a resumed run needs besides the parameters: the step and the loss history."""

    step: int = 0
    losses: List[float] = field(default_factory=list)
    seconds: float = 0.0


def _schedule(cfg: DistillConfig):
    warm = optim.linear_schedule(1e-7, cfg.lr, max(cfg.warmup, 1))
    decay = optim.cosine_decay(cfg.lr, max(cfg.steps - cfg.warmup, 1), cfg.lr * 0.1)
    return optim.join_schedules([warm, decay], [max(cfg.warmup, 1)])


def _batch_order(n: int, batch_size: int, steps: int, seed: int) -> List[List[int]]:
    """Deterministic epochs of shuffled batches, so a resumed run sees the same batches."""
    import random

    rng, order = random.Random(seed), []
    while len(order) < steps * batch_size:
        perm = list(range(n))
        rng.shuffle(perm)
        order += perm
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(steps)]


def save_state(path: Path, model, opt, state: DistillState) -> None:
    """Trainable parameters, optimizer state and progress, written atomically."""
    path.mkdir(parents=True, exist_ok=True)
    arrays = dict(tree_flatten(model.trainable_parameters()))
    arrays.update({f"opt.{k}": v for k, v in tree_flatten(opt.state)})
    tmp = path / "state.tmp.safetensors"
    mx.save_safetensors(str(tmp), arrays)
    tmp.replace(path / "state.safetensors")
    (path / "progress.json.tmp").write_text(json.dumps(asdict(state)))
    (path / "progress.json.tmp").replace(path / "progress.json")


def load_state(path: Path, model, opt) -> Optional[DistillState]:
    if not (path / "progress.json").is_file():
        return None
    arrays = mx.load(str(path / "state.safetensors"))
    model.update(tree_unflatten([(k, v) for k, v in arrays.items() if not k.startswith("opt.")]))
    opt.state = tree_unflatten([(k[4:], v) for k, v in arrays.items() if k.startswith("opt.")])
    return DistillState(**json.loads((path / "progress.json").read_text()))


def distill(
    model: nn.Module,
    targets: Targets,
    cfg: DistillConfig,
    state_dir: Optional[str | Path] = None,
    stop_after: Optional[int] = None,
    log: Callable[[str], None] = print,
    deadline: Optional[float] = None,
) -> DistillState:
    """Train ``model``'s trainable parameters (the fake-quantised scales) on ``targets``.

    With ``state_dir`` the run checkpoints every ``log_every`` steps and resumes from there;
    ``stop_after`` ends this call after that many steps, ``deadline`` (a ``time.perf_counter``
    value) at the first step that ends past it (the run resumes later)."""
    tokens, idx, lp, mask = targets
    opt = optim.Adam(learning_rate=_schedule(cfg))
    state = DistillState()
    sd = Path(state_dir) if state_dir else None
    if sd is not None:
        opt.init(model.trainable_parameters())
        state = load_state(sd, model, opt) or state
    batches = _batch_order(tokens.shape[0], cfg.batch_size, cfg.steps, cfg.seed)

    def loss_fn(mdl, x, i, p, m):
        return topk_kl(mdl(x), i, p, m)

    grad_fn = nn.value_and_grad(model, loss_fn)
    model.train()
    start, t0 = state.step, time.perf_counter()
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    for step in range(start, end):
        b = mx.array(batches[step])
        loss, grads = grad_fn(model, tokens[b, :-1], idx[b], lp[b], mask[b])
        opt.update(model, grads)
        mx.eval(loss, model.trainable_parameters(), opt.state)
        state.losses.append(loss.item())
        state.step = step + 1
        late = deadline is not None and time.perf_counter() > deadline
        if state.step % cfg.log_every == 0 or state.step == end or late:
            recent = state.losses[-cfg.log_every :]
            el = state.seconds + time.perf_counter() - t0
            log(f"  step {state.step}/{cfg.steps}: top-k KL {sum(recent) / len(recent):.4f} "
                f"({el / max(state.step, 1):.1f} s/step)")  # fmt: skip
            if sd is not None:
                st = DistillState(state.step, state.losses, el)
                save_state(sd, model, opt, st)
        if late:
            break
    state.seconds += time.perf_counter() - t0
    if sd is not None:
        save_state(sd, model, opt, state)
    model.eval()
    return state


def mean_topk_kl(model, targets: Targets, batch_size: int = 4) -> float:
    """Held-out top-k KL of ``model`` against cached targets (no gradients)."""
    tokens, idx, lp, mask = targets
    tot, n = 0.0, 0.0
    for i in range(0, tokens.shape[0], batch_size):
        x, m = tokens[i : i + batch_size, :-1], mask[i : i + batch_size]
        kl = topk_kl(model(x), idx[i : i + batch_size], lp[i : i + batch_size], m)
        w = m.sum().item()  # positions: the mean over every real position of the set
        tot += kl.item() * w
        n += w
    return tot / n if n else math.nan


__all__: Sequence[str] = (
    "DistillConfig", "cache_targets", "distill", "mean_topk_kl", "topk_kl",
)  # fmt: skip
