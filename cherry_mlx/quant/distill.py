"""Distillation-calibrated quantisation (DWQ): train the block scales of a quantised model so its
next-token distribution matches the full-precision teacher's.

The teacher's distribution is kept as its top-k log-probabilities per position (normalised over
the whole vocabulary), computed once (``teacher_topk``) and cached on disk (``save_targets`` /
``read_targets``), so every student arm reads the same targets. The loss is the KL divergence
restricted to the teacher's top k tokens,

    L = mean over positions of  Σ_{i ∈ top-k} p_i (log p_i − log q_i)

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
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten

Targets = Tuple[mx.array, mx.array, mx.array]  # tokens (N, T), idx (N, T-1, k), logp (N, T-1, k)


def teacher_topk(model, tokens: mx.array, k: int = 128, batch_size: int = 4) -> Targets:
    """Top-k next-token log-probabilities of ``model`` at every position of ``tokens`` (N, T):
    inputs are tokens[:, :-1]; returns (tokens, indices int32 (N, T-1, k), log-probs fp16)."""
    idx_all, lp_all = [], []
    for i in range(0, tokens.shape[0], batch_size):
        logits = model(tokens[i : i + batch_size, :-1]).astype(mx.float32)  # (B, T-1, V)
        logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        idx = mx.argpartition(-logp, kth=k - 1, axis=-1)[..., :k].astype(mx.int32)
        lp = mx.take_along_axis(logp, idx, axis=-1).astype(mx.float16)
        mx.eval(idx, lp)
        idx_all.append(idx)
        lp_all.append(lp)
    return tokens, mx.concatenate(idx_all), mx.concatenate(lp_all)


def save_targets(path: str | Path, targets: Targets, meta: Optional[Dict] = None) -> Path:
    """Write a target cache (one safetensors file; ``meta`` goes in its metadata)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, idx, lp = targets
    tmp = path.with_name(path.name + ".tmp.safetensors")
    mx.save_safetensors(str(tmp), {"tokens": tokens, "indices": idx, "logprobs": lp},
                        metadata={"meta": json.dumps(meta or {})})  # fmt: skip
    tmp.replace(path)
    return path


def read_targets(path: str | Path) -> Targets:
    """The reader of a target cache: (tokens (N, T), indices (N, T-1, k), log-probs (N, T-1, k)).
    Any teacher cache that yields these three arrays can feed ``distill``."""
    d = mx.load(str(path))
    return d["tokens"], d["indices"], d["logprobs"]


def topk_kl(logits: mx.array, idx: mx.array, logp: mx.array) -> mx.array:
    """Mean over positions of Σ_topk p (log p − log q); logits (B, T, V), idx/logp (B, T, k)."""
    logits = logits.astype(mx.float32)
    logq = mx.take_along_axis(logits, idx, axis=-1) - mx.logsumexp(logits, axis=-1, keepdims=True)
    lp = logp.astype(mx.float32)
    return (mx.exp(lp) * (lp - logq)).sum(-1).mean()


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
    tokens, idx, lp = targets
    opt = optim.Adam(learning_rate=_schedule(cfg))
    state = DistillState()
    sd = Path(state_dir) if state_dir else None
    if sd is not None:
        opt.init(model.trainable_parameters())
        state = load_state(sd, model, opt) or state
    batches = _batch_order(tokens.shape[0], cfg.batch_size, cfg.steps, cfg.seed)

    def loss_fn(mdl, x, i, p):
        return topk_kl(mdl(x), i, p)

    grad_fn = nn.value_and_grad(model, loss_fn)
    model.train()
    start, t0 = state.step, time.perf_counter()
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    for step in range(start, end):
        b = mx.array(batches[step])
        loss, grads = grad_fn(model, tokens[b, :-1], idx[b], lp[b])
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
    tokens, idx, lp = targets
    tot, n = 0.0, 0
    for i in range(0, tokens.shape[0], batch_size):
        x = tokens[i : i + batch_size, :-1]
        kl = topk_kl(model(x), idx[i : i + batch_size], lp[i : i + batch_size])
        tot += kl.item() * x.shape[0]
        n += x.shape[0]
    return tot / max(n, 1) if n else math.nan


__all__: Sequence[str] = (
    "DistillConfig", "distill", "mean_topk_kl", "read_targets", "save_targets", "teacher_topk",
    "topk_kl",
)  # fmt: skip
