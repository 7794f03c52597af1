"""Fit MTP heads on a teacher cache of the trunk's own replies (``data.teacher_cache``).

The cache (``cherry-mlx teacher build MODEL --origin generate --hidden-layers last``) holds, per
position, the trunk's residual stream after its last block (fp16) and its top-k next tokens; a
step applies the frozen final norm to the cached stream (h0, what the heads read) and runs only
the heads: no trunk forward pass, so a step costs K head blocks and K draft-vocabulary
projections instead of a 30-layer forward. The loss is ``HeadDistillLoss.from_states``: per head
the cross-entropy against the trunk's greedy token (``topk_idx[..., 0]``) over the draft
vocabulary, plus ``feature_weight`` × smooth-L1 of head k's state against the trunk's state at
t+k.

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
from typing import Dict, Optional, Sequence

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from cherry_mlx.data.teacher_cache import CacheError, TeacherCache, model_fingerprint
from cherry_mlx.models.loading import (
    load_config,
    load_model,
    load_tokenizer,
    model_config,
    resolve,
    save_model,
)
from cherry_mlx.models.mtp import (
    draft_rows,
    draft_vocab,
    ensure_mtp_heads,
    freeze_for_mtp,
    set_draft_vocab,
)
from cherry_mlx.models.outputs import check_output
from cherry_mlx.training.data import default_data_dir
from cherry_mlx.training.mtp import HeadDistillLoss
from cherry_mlx.training.mtp_fit_config import TrainMTPConfig
from cherry_mlx.training.teacher import build_cache
from cherry_mlx.training.teacher_config import TeacherConfig

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


def open_cache(cache_dir, model, source_dir=None) -> TeacherCache:
    """The teacher cache checked for MTP heads: the trunk's last-layer states present, built
    from ``source_dir`` (when given) and of the trunk's vocabulary and width."""
    depth = len(model.model.schedule)
    fp = model_fingerprint(source_dir) if source_dir is not None else None
    cache = TeacherCache.open(cache_dir, fingerprint=fp, need_hidden=[depth], purpose="MTP heads")
    got = (cache.vocab_size, int(cache.manifest.get("hidden_size", model.args.hidden_size)))
    if got != (model.args.vocab_size, model.args.hidden_size):
        raise CacheError(
            f"teacher cache {cache_dir} is of a model with vocabulary/width {got}, the trunk has "
            f"{(model.args.vocab_size, model.args.hidden_size)}; rebuild it from this model"
        )
    return cache


def sequence_rows(cache: TeacherCache) -> np.ndarray:
    """Rows with at least two positions (a head needs a next one)."""
    rows = np.flatnonzero(cache.lengths() >= 2)
    if not rows.size:
        raise CacheError(f"teacher cache {cache.path} holds no sequence of 2+ tokens; rebuild it")
    return rows


def draft_vocab_from(cache: TeacherCache, rows: Sequence[int], n: int, vocab_size: int):
    """The n tokens the trunk chooses most often in its replies (its greedy next token at every
    supervised position; other positions break ties)."""
    counts = np.zeros(vocab_size, np.float64)
    for s in range(0, len(rows), 64):
        b = cache.row_batch(rows[s : s + 64], keys=("topk_idx", "response", "length"))
        g = b["topk_idx"][..., 0].astype(np.int64)  # (B, T)
        real = np.arange(g.shape[1])[None] < b["length"][:, None]
        np.add.at(counts, g[real & b["response"]], 1.0)
        np.add.at(counts, g[real], 1e-6)
    n = min(n, vocab_size)
    return sorted(int(i) for i in np.argsort(-counts, kind="stable")[:n])


def make_batch(model, cache: TeacherCache, rows, max_len: int) -> Dict[str, mx.array]:
    """Right-padded batch: inputs (B, L), h0 (B, L, D) float32 (the cached last-layer stream
    through the trunk's final norm), greedy (B, L), valid (B, L); L = the longest row rounded up
    to ``BUCKET``, at most ``max_len``."""
    depth = len(model.model.schedule)
    b = cache.row_batch(rows, keys=("inputs", "length", "topk_idx", f"hidden-{depth}"))
    n = np.minimum(b["length"], max_len)
    L = min(max_len, int(math.ceil(n.max() / BUCKET) * BUCKET))
    T = b["inputs"].shape[1]

    def fit(a):  # (B, T, ...) -> (B, L, ...): cut, or pad with zeros past the cache's rows
        a = a[:, :L]
        return a if T >= L else np.pad(a, [(0, 0), (0, L - T)] + [(0, 0)] * (a.ndim - 2))

    valid = np.arange(L)[None] < n[:, None]  # (B, L)
    h = mx.array(fit(b[f"hidden-{depth}"]).astype(np.float32))  # (B, L, D)
    return {"inputs": mx.array(fit(b["inputs"]) * valid),
            "h0": model.model.norm(h).astype(mx.float32),
            "greedy": mx.array(fit(b["topk_idx"][..., 0].astype(np.int32)) * valid),
            "valid": mx.array(valid)}  # fmt: skip


def lr_at(cfg: FitConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.learning_rate * (step + 1) / cfg.warmup
    t = min((step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1), 1.0)
    lo = cfg.min_lr_ratio
    return cfg.learning_rate * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t)))


def agreement(model, cache: TeacherCache, rows, max_len: int):
    """Per head, the share of positions where its draft (argmax over the draft vocabulary, as it
    drafts) equals the trunk's greedy token (teacher-forced on cached sequences)."""
    ids = draft_vocab(model.args.mtp)
    hits = np.zeros(model.mtp.num_heads)
    tot = np.zeros(model.mtp.num_heads)
    for i in range(0, len(rows), 16):
        b = make_batch(model, cache, rows[i : i + 16], max_len)
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


def summary(cache: TeacherCache) -> Dict:
    """What the heads were fitted on: sequences, positions, reply (supervised) tokens, the
    build's seconds."""
    shards = cache.manifest["shards"]
    return {"sequences": cache.rows, "tokens": int(cache.lengths().sum()),
            "reply_tokens": cache.tokens, "origin": cache.manifest.get("origin"),
            "generation_s": round(sum(s.get("seconds", 0.0) for s in shards), 1)}  # fmt: skip


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
    """Train ``cfg.heads`` sequential heads of ``model`` (its trunk frozen) on the teacher cache
    ``cache_dir`` (checked against ``source_dir`` when given); resumes from ``state_dir``. Writes
    the model with heads to ``out_model`` when the steps are done or the time budget ends the
    call. ``stop_after`` ends this call after that many steps (as the time budget does). Returns
    a summary (steps, positions, seconds, losses, agreement on held-back cached sequences)."""
    state_dir = Path(state_dir)
    cache = open_cache(cache_dir, model, source_dir)
    seqs = sequence_rows(cache)
    rng = np.random.default_rng(cfg.seed)
    order = seqs[rng.permutation(len(seqs))]
    n_valid = max(1, int(len(seqs) * cfg.valid_share)) if len(seqs) > 1 else 0
    valid = order[:n_valid]
    train = order[n_valid:] if len(order) > n_valid else valid
    meta = {"step": 0, "seconds": 0.0, "positions": 0, "losses": [], "config": asdict(cfg)}
    if (state_dir / "meta.json").exists():
        meta = json.loads((state_dir / "meta.json").read_text())
        if meta["config"] != asdict(cfg):
            raise ValueError(f"{state_dir}: saved with other settings; use another --work dir")
        ids = meta["draft_vocab"]
    else:
        ids = (
            draft_vocab_from(cache, train, cfg.draft_vocab, model.args.vocab_size)
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
        b = make_batch(model, cache, np.sort(train[pick]), cfg.max_len)
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
           if meta["losses"] else None, "cache": summary(cache)}  # fmt: skip
    if done or budget_s is not None:  # a budget-limited run still leaves usable heads
        model.eval()
        res["agreement_valid"] = agreement(model, cache, valid, cfg.max_len)
        res["valid_sequences"] = len(valid)
        if out_model is not None:
            base = load_config(Path(source_dir)) if source_dir is not None else None
            save_model(model, out_model, model_config(model, base), tokenizer_dir=source_dir)
            (Path(out_model) / "mtp_fit.json").write_text(json.dumps(res, indent=1))
    return res


def train_mtp_command(cfg: TrainMTPConfig, log=print) -> Dict:
    """``cherry-mlx train-mtp``: check -o, use (or build) the teacher cache, fit, save."""
    src = resolve(cfg.model)
    out = check_output(cfg.out, [src], cfg.force)
    model, _ = load_model(src)
    cache = Path(cfg.teacher_cache) if cfg.teacher_cache else out / "teacher-cache"
    open_first = cfg.teacher_cache is not None
    if open_first:  # a one-line error before any work when it cannot serve
        open_cache(cache, model, src)
    else:
        log(f"building the teacher cache in {cache} (once; resumable with --force)")
        tcfg = TeacherConfig(model=str(src), out=str(cache), origin="generate",
                             data=cfg.data or str(default_data_dir()), k=4,
                             seq_len=256, max_rows=cfg.prompts, hidden_layers="last",
                             max_new_tokens=cfg.max_new_tokens, temperature=0.0,
                             stop_at_eos=False)  # fmt: skip
        build_cache(tcfg, log=log, tokenizer=load_tokenizer(src))
    fit = FitConfig(heads=cfg.heads, steps=cfg.steps, batch_size=cfg.batch_size,
                    learning_rate=cfg.learning_rate, warmup=min(30, cfg.steps // 5),
                    feature_weight=cfg.feature_weight, draft_vocab=cfg.draft_vocab,
                    seed=cfg.seed)  # fmt: skip
    res = fit_heads(model, cache, out / "heads-state", fit, out_model=out, source_dir=src,
                    log=log)  # fmt: skip
    agree = ", ".join(f"{a:.2f}" for a in res.get("agreement_valid", []))
    log(f"{cfg.heads} heads, {res['step']} steps on {res['cache']['sequences']} cached "
        f"sequences; agreement with the trunk on held-back ones: {agree}; saved to "
        f"{out}")  # fmt: skip
    return res
