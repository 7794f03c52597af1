"""Cheap drafting pieces shared by the drafters: the reduced-vocabulary scorer and the drafter of
cross-attention heads.

Reduced draft vocabulary (EAGLE-3): a head's state is scored only against the LM-head rows of the
``mtp.draft_vocab`` tokens (the N most frequent tokens of the training data), (1, D) @ (D, N),
instead of all V rows. The trunk still verifies with the full vocabulary, so greedy output is
unchanged; a draft outside the N tokens is simply never proposed. For sampling the draft law q is
the softmax over the N tokens, zero elsewhere, which speculative sampling accepts as any q.
"""

from __future__ import annotations

from dataclasses import replace
from typing import List, Optional, Tuple

import mlx.core as mx
from mlx_lm.models.cache import KVCache

from cherry_mlx.decoding.generate import SamplingConfig, sample, target_logprobs
from cherry_mlx.models.mtp import draft_rows, draft_vocab, has_mtp


def drafting_heads(model, kind: str, num_draft: Optional[int] = None) -> list:
    """The first ``num_draft`` (default all) MTP heads of ``model``, which must be of ``kind``
    ("sequential" or "cross"); a one-line error for a model without such heads or a bad count."""
    if not has_mtp(model):
        raise ValueError("model has no MTP heads (config key 'mtp'): use plain decoding")
    if model.mtp.kind != kind:
        raise ValueError(
            f"this drafter drafts with {kind} heads, the model has {model.mtp.kind} heads: "
            "use make_drafter"
        )
    k = model.mtp.num_heads
    if num_draft is not None and not 1 <= num_draft <= k:
        raise ValueError(f"--num-draft {num_draft}: the model has {k} MTP heads, use 1..{k}")
    return model.mtp.heads[: num_draft or k]


class DraftScorer:
    """Head state (1, D) -> (draft token (1,), draft log-probs over the full vocabulary (1, V) for
    sampling, None for greedy)."""

    def __init__(self, model):
        self.model = model
        ids = draft_vocab(model.args.mtp)
        self.ids = self.w = None
        if ids:
            self.ids = mx.array(ids, dtype=mx.int32)  # (N,)
            # (D, N): LM-head rows of the draft tokens (tied, untied or quantised heads alike)
            self.w = draft_rows(model, self.ids).T
            mx.eval(self.w)

    @property
    def size(self) -> int:
        return self.model.args.vocab_size if self.ids is None else self.ids.size

    def __call__(self, h: mx.array, cfg: SamplingConfig) -> Tuple[mx.array, Optional[mx.array]]:
        if self.ids is None:
            lp = target_logprobs(self.model.logits(h), None, cfg)  # (1, V)
            return sample(lp, cfg).astype(mx.int32), (None if cfg.greedy else lp)
        # the draft ids are not positions 0..N-1: mask the ones past the limit by id
        logits = h @ self.w  # (1, N)
        if cfg.vocab_limit is not None:
            logits = mx.where(self.ids < cfg.vocab_limit, logits, mx.array(-mx.inf, logits.dtype))
        lp = target_logprobs(logits, None, replace(cfg, vocab_limit=None))  # (1, N)
        tok = self.ids[sample(lp, cfg)]  # (1,) full-vocabulary id
        if cfg.greedy:
            return tok, None
        full = mx.full((1, self.model.args.vocab_size), -mx.inf, dtype=lp.dtype)
        full[:, self.ids] = lp
        return tok, full


class CrossDrafter:
    """Drafter for cross-attention heads (``mtp.kind = "cross"``), with ``MTPDrafter``'s interface
    (``reset``, ``observe``, ``draft``, ``commit``).

    Head k drafts at the last trunk position T from (h_{k-1,T}, emb of token T+k) and the trunk
    states 0..T. Each head keeps one KV cache of its projections of the trunk's states; only
    committed trunk states are ever observed, so nothing needs trimming after a rejection."""

    def __init__(self, model, num_draft: Optional[int] = None):
        self.model = model
        self.heads = drafting_heads(model, "cross", num_draft)
        self.K = len(self.heads)
        self.scorer = DraftScorer(model)
        self.reset(0)

    def reset(self, start: int) -> None:
        self.start = start
        self.caches = [KVCache() for _ in self.heads]
        self._pending: List[List[mx.array]] = [
            [] for _ in self.heads
        ]  # trunk states not yet cached
        self._last: Optional[mx.array] = None  # (1, 1, D) trunk state at the last position

    def observe(self, h0: mx.array, start: int) -> None:
        """Trunk states (1, L, D) of positions start..start+L-1 (consecutive with earlier ones)."""
        assert start == self.start + self.caches[0].offset + sum(
            p.shape[1] for p in self._pending[0]
        ), "trunk states must be observed in order"
        for p in self._pending:
            p.append(h0)
        self._last = h0[:, -1:]

    def draft(self, tokens, cfg: SamplingConfig, k: Optional[int] = None):
        """Tokens x_0..x_{T+1} -> (drafts (k,), draft log-probs (k, V) or None)."""
        T = len(tokens) - 2
        embed = self.model.model.embed_tokens
        h, x = self._last, mx.array([[tokens[-1]]], dtype=mx.int32)
        drafts, qs = [], []
        for j, head in enumerate(self.heads[: k or self.K]):
            parts, self._pending[j] = self._pending[j], []
            mem = parts[0] if len(parts) == 1 else mx.concatenate(parts, axis=1)  # (1, n, D)
            h = head(h, embed(x), mem, offset=T - self.start, cache=self.caches[j])  # (1, 1, D)
            tok, lp = self.scorer(h[:, -1, :], cfg)
            drafts.append(tok)
            qs.append(lp)
            x = tok[None]
        return mx.concatenate(drafts), (None if cfg.greedy else mx.concatenate(qs))

    def commit(self, T: int, accepted: int) -> None:
        """Nothing to undo: the heads never cache a state built from a draft."""
