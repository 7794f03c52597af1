"""Fit MTP heads on a cache of the trunk's own generations (``training.mtp_cache``).

A step reads the trunk's final states h0 and greedy next tokens from the cache and runs only the
heads: no trunk forward pass, so a step costs K head blocks and K draft-vocabulary projections
instead of a 30-layer forward. The loss is ``HeadDistillLoss.from_states``: per head the
cross-entropy against the trunk's greedy token over the draft vocabulary, plus ``feature_weight``
× smooth-L1 of head k's state against the trunk's state at t+k.

Training-time test: head k is always fed head k-1's *own* output state (the chain is unrolled
exactly as the drafter runs it, EAGLE-3's point), never the trunk's true state at t+k-1. The
token fed with it is the true one: a draft of head k is only judged when heads 1..k-1 were
accepted, i.e. when their drafts equal the trunk's tokens, so feeding drafted tokens would train
on inputs whose outputs are never used.

The draft vocabulary is the N tokens the trunk most often chooses in its own replies (EAGLE-3
picks it from the target's generations the same way). Checkpoints (heads, optimizer, step) are
written atomically every ``save_every`` steps and at the time budget; a rerun resumes.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from cherry_mlx.models.loading import load_config, model_config, save_model
from cherry_mlx.models.mtp import (
    draft_rows,
    draft_vocab,
    ensure_mtp_heads,
    freeze_for_mtp,
    set_draft_vocab,
)
from cherry_mlx.training.mtp import HeadDistillLoss
from cherry_mlx.training.mtp_cache import CachedSeq, iter_cache, summary

BUCKET = 32  # sequence lengths padded to a multiple of this: few distinct compiled shapes


@dataclass
class FitConfig:
    heads: int = 3
    steps: int = 1000
    batch_size: int = 16
    max_len: int = 256  # positions per sequence (prompt + reply), longer ones are cut
    learning_rate: float = 1e-3
    warmup: int = 30
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    feature_weight: float = 1.0
    draft_vocab: int = 4096
    valid_share: float = 0.05  # cached sequences held back for the agreement printout
    save_every: int = 50
    compile: bool = True
    seed: int = 0


def load_sequences(cache_dir) -> List[CachedSeq]:
    seqs = [s for s in iter_cache(cache_dir) if len(s.tokens) >= 3]
    if not seqs:
        raise ValueError(f"{cache_dir}: the cache holds no sequence; run its generation first")
    return seqs


def draft_vocab_from(seqs: List[CachedSeq], n: int, vocab_size: int) -> List[int]:
    """The n tokens the trunk chooses most often in its replies (its greedy next token at every
    reply position; prompt positions break ties)."""
    counts = np.zeros(vocab_size, np.float64)
    for s in seqs:
        r = s.greedy[max(s.prompt_len - 1, 0) :]
        np.add.at(counts, r, 1.0)
        np.add.at(counts, s.greedy, 1e-6)
    n = min(n, vocab_size)
    return sorted(int(i) for i in np.argsort(-counts, kind="stable")[:n])


def make_batch(seqs: List[CachedSeq], max_len: int) -> Dict[str, mx.array]:
    """Right-padded batch: inputs (B, L) = tokens[:-1], h0 (B, L, D) float32, greedy (B, L),
    valid (B, L); L = the longest row rounded up to ``BUCKET``, at most ``max_len``."""
    n = [min(len(s.tokens) - 1, max_len) for s in seqs]
    L = min(max_len, int(math.ceil(max(n) / BUCKET) * BUCKET))
    D = seqs[0].hidden.shape[1]
    inputs = np.zeros((len(seqs), L), np.int32)
    greedy = np.zeros((len(seqs), L), np.int32)
    h0 = np.zeros((len(seqs), L, D), np.float32)
    valid = np.zeros((len(seqs), L), bool)
    for b, (s, m) in enumerate(zip(seqs, n)):
        inputs[b, :m] = s.tokens[:m]
        greedy[b, :m] = s.greedy[:m]
        h0[b, :m] = s.hidden[:m]
        valid[b, :m] = True
    return {"inputs": mx.array(inputs), "h0": mx.array(h0), "greedy": mx.array(greedy),
            "valid": mx.array(valid)}  # fmt: skip


def lr_at(cfg: FitConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.learning_rate * (step + 1) / cfg.warmup
    t = min((step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1), 1.0)
    lo = cfg.min_lr_ratio
    return cfg.learning_rate * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t)))


def agreement(model, seqs: List[CachedSeq], max_len: int) -> List[float]:
    """Per head, the share of positions where its draft (argmax over the draft vocabulary, as it
    drafts) equals the trunk's greedy token (teacher-forced on cached sequences)."""
    ids = draft_vocab(model.args.mtp)
    hits = np.zeros(model.mtp.num_heads)
    tot = np.zeros(model.mtp.num_heads)
    for i in range(0, len(seqs), 16):
        b = make_batch(seqs[i : i + 16], max_len)
        states = model.mtp.sequence_states(model, b["h0"], b["inputs"])
        for k, hk in enumerate(states, start=1):
            if ids:
                w = draft_rows(model, mx.array(ids, dtype=mx.int32))
                pred = mx.array(ids, dtype=mx.int32)[mx.argmax(hk @ w.T, axis=-1)]
            else:
                pred = mx.argmax(model.logits(hk), axis=-1)
            m = b["valid"][:, k:]
            hits[k - 1] += float(((pred == b["greedy"][:, k:]) & m).sum().item())
            tot[k - 1] += float(m.sum().item())
    return [float(h / t) if t else 0.0 for h, t in zip(hits, tot)]


def _save_state(state_dir: Path, model, opt, meta: Dict) -> None:
    tmp = state_dir.with_name(state_dir.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(tmp / "heads.safetensors"), dict(tree_flatten(model.mtp.parameters())))
    mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(opt.state)))
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    old = state_dir.with_name(state_dir.name + ".old")
    if state_dir.exists():
        os.replace(state_dir, old)
    os.replace(tmp, state_dir)
    if old.exists():
        for f in old.iterdir():
            f.unlink()
        old.rmdir()


def fit_heads(
    model,
    cache_dir,
    state_dir,
    cfg: FitConfig = FitConfig(),
    budget_s: Optional[float] = None,
    out_model=None,
    source_dir=None,
    log=print,
    stop_after: Optional[int] = None,
) -> Dict:
    """Train ``cfg.heads`` sequential heads of ``model`` (its trunk frozen) on the cache; resumes
    from ``state_dir``. Writes the model with heads to ``out_model`` when the steps are done or
    the time budget ends the call. ``stop_after`` ends this call after that many steps (as the
    time budget does). Returns a summary (steps, positions, seconds, losses, agreement on
    held-back cached sequences)."""
    state_dir = Path(state_dir)
    seqs = load_sequences(cache_dir)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(seqs))
    n_valid = max(1, int(len(seqs) * cfg.valid_share)) if len(seqs) > 1 else 0
    valid = [seqs[i] for i in order[:n_valid]]
    train = [seqs[i] for i in order[n_valid:]] or valid
    meta = {"step": 0, "seconds": 0.0, "positions": 0, "losses": [], "config": asdict(cfg)}
    if (state_dir / "meta.json").exists():
        meta = json.loads((state_dir / "meta.json").read_text())
        if meta["config"] != asdict(cfg):
            raise ValueError(f"{state_dir}: saved with other settings; use another --work dir")
        ids = meta["draft_vocab"]
    else:
        ids = (
            draft_vocab_from(train, cfg.draft_vocab, model.args.vocab_size)
            if cfg.draft_vocab
            else None
        )
        meta["draft_vocab"] = ids
    mx.random.seed(cfg.seed)
    ensure_mtp_heads(model, cfg.heads, "sequential")
    set_draft_vocab(model, ids)
    freeze_for_mtp(model)
    loss_fn = HeadDistillLoss(cfg.feature_weight)
    opt = optim.AdamW(learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay)
    opt.init(model.trainable_parameters())
    if meta["step"]:
        model.mtp.update(
            tree_unflatten(list(mx.load(str(state_dir / "heads.safetensors")).items()))
        )
        opt.state = tree_unflatten(list(mx.load(str(state_dir / "optimizer.safetensors")).items()))
        log(f"fit: resumed at step {meta['step']}")

    def loss(model, b):
        return loss_fn.from_states(model, b["h0"], b["greedy"], b["inputs"], b["valid"])

    grad_fn = nn.value_and_grad(model, loss)
    state = [model.state, opt.state]

    def train_step(b):
        val, grads = grad_fn(model, b)
        opt.update(model, grads)
        return val

    if cfg.compile:  # one graph per padded length (BUCKET): a few traces, then fused steps
        train_step = partial(mx.compile, inputs=state, outputs=state)(train_step)
    t_start, first = time.perf_counter(), meta["step"]
    while meta["step"] < cfg.steps:
        if budget_s is not None and time.perf_counter() - t_start > budget_s:
            log(f"fit: time budget reached at step {meta['step']} (rerun to go on)")
            break
        if stop_after is not None and meta["step"] - first >= stop_after:
            break
        t0 = time.perf_counter()
        step_rng = np.random.default_rng([cfg.seed, meta["step"]])  # the same batches on resume
        pick = step_rng.choice(len(train), size=min(cfg.batch_size, len(train)), replace=False)
        b = make_batch([train[i] for i in pick], cfg.max_len)
        opt.learning_rate = lr_at(cfg, meta["step"])
        val = train_step(b)
        mx.eval(val, state)
        meta["step"] += 1
        meta["positions"] += int(b["valid"].sum().item())
        meta["seconds"] += time.perf_counter() - t0
        meta["losses"].append(round(float(val.item()), 4))
        if meta["step"] % 10 == 0:
            recent = np.mean(meta["losses"][-10:])
            per = meta["seconds"] / meta["step"]
            log(f"fit: step {meta['step']}/{cfg.steps} loss {recent:.3f} "
                f"({per:.2f} s/step, {meta['positions']} positions)")  # fmt: skip
        if meta["step"] % cfg.save_every == 0:
            _save_state(state_dir, model, opt, meta)
    _save_state(state_dir, model, opt, meta)
    done = meta["step"] >= cfg.steps
    res = {"done": done, "step": meta["step"], "positions": meta["positions"],
           "train_s": round(meta["seconds"], 1), "loss_last10": float(np.mean(meta["losses"][-10:]))
           if meta["losses"] else None, "cache": summary(cache_dir)}  # fmt: skip
    if done or budget_s is not None:  # a budget-limited run still leaves usable heads
        model.eval()
        res["agreement_valid"] = agreement(model, valid, cfg.max_len)
        res["valid_sequences"] = len(valid)
        if out_model is not None:
            base = load_config(Path(source_dir)) if source_dir is not None else None
            save_model(model, out_model, model_config(model, base), tokenizer_dir=source_dir)
            (Path(out_model) / "mtp_fit.json").write_text(json.dumps(res, indent=1))
    return res
