"""Self-speculative decoding with the model's own MTP heads (paper §3.4.2, §5.3).

One round, with committed tokens x_0..x_{T+1} (x_{T+1} sampled but not yet fed to the trunk) and
trunk states known through position T:

1. draft: head 1 reads (h0_T, emb x_{T+1}) and drafts d_1 = token T+2; head k reads
   (h_{k-1,T}, emb d_{k-1}) and drafts d_k. The drafted tokens are fed back, so the chain is one
   lazy graph evaluated once.
2. verify: the trunk reads [x_{T+1}, d_1..d_K] in ONE forward pass (K+1 positions) and gives its
   own distribution p_0..p_K at each.
3. accept: greedy keeps d_i while d_i == argmax p_{i-1}; sampling keeps d_i with probability
   min(1, p_{i-1}(d_i)/q_i(d_i)) and on the first rejection draws from norm(max(p - q, 0))
   (Leviathan et al. 2023), which makes every emitted token distributed exactly as plain sampling
   from p. The trunk's token after the accepted prefix (bonus) is always emitted, so a round
   yields 1..K+1 tokens.
4. trim: every trunk KV cache (one per block *call*, so the per-loop caches of a looped model too)
   drops the K - a rejected positions; head k's cache drops its entries built from rejected drafts.

Head caches: head k's entry at position t was built from token t+k; it stays valid iff that token
was committed. ``_c[k]`` counts head k's valid entries; next round head k recomputes positions
``_c[k]..T`` from the kept states of head k-1 (``_hist``), so the heads see the same oracle inputs
as in training wherever the tokens are known.

mlx-lm's ``speculative_generate_step`` wants a separate draft *model* that reads tokens only; MTP
heads need the trunk's hidden states, so they do not fit that slot. ``MTPDrafter`` is the reusable
piece (``observe`` trunk states, ``draft``, ``commit``) for any loop that exposes hidden states.
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import mlx.core as mx
import numpy as np

from cherry_mlx.decoding.adaptive import AdaptiveDraft
from cherry_mlx.decoding.drafting import CrossDrafter, DraftScorer, drafting_heads
from cherry_mlx.decoding.generate import (
    GenerationStats,
    SamplingConfig,
    penalty_history,
    prefill,
    sample,
    target_logprobs,
)
from cherry_mlx.models.mtp import has_mtp


class MTPDrafter:
    """Drafts K tokens from the trunk's last hidden state with the model's MTP heads."""

    def __init__(self, model, num_draft: Optional[int] = None):
        self.model = model
        self.heads = drafting_heads(model, "sequential", num_draft)
        self.K = len(self.heads)
        self.scorer = DraftScorer(model)
        self.reset(0)

    def reset(self, start: int) -> None:
        """Forget all head state; positions before ``start`` are never seen by the heads."""
        self.caches = [c for c in self.model.mtp.make_cache()[: self.K]]
        self._c = [start] * (self.K + 1)  # _c[k]: head k's valid entries end (k >= 1)
        self._hist: List[Tuple[int, Optional[mx.array]]] = [(start, None)] * self.K

    def observe(self, h0: mx.array, start: int) -> None:
        """Record trunk states (1, L, D) for positions start..start+L-1."""
        self._set_hist(0, h0, start)

    def _set_hist(self, level: int, h: mx.array, start: int) -> None:
        """States (1, L, D) of ``level`` (0 = trunk) for positions start..; older positions are kept
        only from head level+1's first position still to compute on."""
        s0, old = self._hist[level]
        if old is not None:
            keep_from = max(s0, self._c[level + 1])
            if keep_from < start:
                h = mx.concatenate([old[:, keep_from - s0 : start - s0], h], axis=1)
                start = keep_from
        self._hist[level] = (start, h)

    def _states(self, level: int, lo: int, hi: int) -> mx.array:
        s0, h = self._hist[level]
        assert h is not None and s0 <= lo and hi < s0 + h.shape[1], (level, lo, hi, s0)
        return h[:, lo - s0 : hi - s0 + 1]

    def draft(self, tokens: Sequence[int], cfg: SamplingConfig, num: Optional[int] = None):
        """Tokens x_0..x_{T+1} -> (drafts (n,) lazy int array, draft log-probs (n, V) or None)
        from the first n = ``num`` (default all K) heads."""
        T = len(tokens) - 2
        embed = self.model.model.embed_tokens
        drafts: List[mx.array] = []
        qs: List[mx.array] = []
        for k, head in enumerate(self.heads[: num or self.K], start=1):
            lo = self._c[k]
            # token t+k for t = lo..T: committed where it exists, else an earlier head's draft
            known = [tokens[t + k] for t in range(lo, T + 1) if t + k < len(tokens)]
            ids = [mx.array(known, dtype=mx.int32)] if known else []
            n_draft = (T + 1 - lo) - len(known)
            ids += drafts[k - 1 - n_draft : k - 1] if n_draft else []
            x = mx.concatenate(ids)[None]  # (1, T-lo+1)
            hk = head(self._states(k - 1, lo, T), embed(x), cache=self.caches[k - 1])
            self._c[k] = T + 1
            if k < self.K:
                self._set_hist(k, hk, lo)
            tok, lp = self.scorer(hk[:, -1, :], cfg)  # reduced vocabulary when the model has one
            drafts.append(tok)
            qs.append(lp)
        return mx.concatenate(drafts), (None if cfg.greedy else mx.concatenate(qs))

    def commit(self, T: int, accepted: int) -> None:
        """After a verify of the round drafted at position T: drop entries built from rejected
        drafts. Head k's entry at t used token t+k, valid iff t+k <= T+1+accepted."""
        for k in range(1, self.K + 1):
            valid = min(self._c[k], T + 2 + accepted - k)
            drop = self._c[k] - valid
            if drop > 0:
                self.caches[k - 1].trim(drop)
                self._c[k] = valid


def _accept_greedy(drafts: np.ndarray, target: np.ndarray) -> Tuple[int, int]:
    """drafts (K,), trunk argmax (K+1,) -> (accepted a, bonus token target[a])."""
    a = 0
    while a < len(drafts) and drafts[a] == target[a]:
        a += 1
    return a, int(target[a])


def accept_sampled(
    drafts: np.ndarray, p: np.ndarray, q: np.ndarray, rng: np.random.Generator
) -> Tuple[int, int]:
    """Speculative sampling. drafts (K,), target probs p (K+1, V), draft probs q (K, V) ->
    (accepted a, next token). Each emitted token is distributed as p given the prefix."""
    for i, d in enumerate(drafts):
        if rng.random() * q[i, d] < p[i, d]:  # accept with prob min(1, p/q)
            continue
        resid = np.maximum(p[i] - q[i], 0.0)
        z = resid.sum()
        dist = resid / z if z > 0 else p[i]
        return i, int(rng.choice(len(dist), p=dist / dist.sum()))
    last = p[len(drafts)]
    return len(drafts), int(rng.choice(len(last), p=last / last.sum()))


def make_drafter(model, num_draft: Optional[int] = None):
    """The drafter for the model's kind of heads (sequential or cross-attention)."""
    if has_mtp(model) and model.mtp.kind == "cross":
        return CrossDrafter(model, num_draft)
    return MTPDrafter(model, num_draft)


def head_acceptance(stats: GenerationStats) -> List[float]:
    """Per-head acceptance from the rounds of ``stats``: head i's draft was accepted in this share
    of the rounds where it was judged (it drafted and heads 1..i-1 were accepted)."""
    K = max(stats.draft_hist, default=0)
    hits, tries = [0] * (K + 1), [0] * (K + 1)
    for a, k in zip(stats.accept_hist, stats.draft_hist):
        for i in range(1, min(a + 1, k) + 1):
            tries[i] += 1
            hits[i] += i <= a
    return [h / t if t else 0.0 for h, t in zip(hits[1:], tries[1:])]


def _plain_burst(model, tokens: List[int], cfg: SamplingConfig, cache, n: int):
    """n plain decode steps from tokens[-1] (not yet fed), pipelined like ``generate_tokens``:
    yields (token, trunk state (1, 1, D) of the token fed before it). The last token yielded is
    not fed, as after a speculative round."""
    ahead = cfg.repetition_penalty == 1.0

    def step(tok_array):
        hs = model.hidden(tok_array[None], cache=cache)  # (1, 1, D)
        lp = target_logprobs(model.logits(hs[:, -1, :]), penalty_history(tokens, cfg), cfg)
        return sample(lp, cfg), hs

    y, h = step(mx.array(tokens[-1:], dtype=mx.int32))
    mx.async_eval(y)
    for i in range(n):
        nxt = None
        if ahead and i + 1 < n:  # queue the next step before reading this token
            nxt = step(y)
            mx.async_eval(nxt[0])
        tok = y.item()
        tokens.append(tok)
        if not ahead and i + 1 < n:
            nxt = step(y)
        yield tok, h
        if nxt is not None:
            y, h = nxt


def speculative_generate_tokens(
    model,
    prompt: Sequence[int],
    cfg: SamplingConfig = SamplingConfig(),
    max_tokens: int = 256,
    cache=None,
    stop: Iterable[int] = (),
    stats: Optional[GenerationStats] = None,
    drafter=None,
    num_draft: Optional[int] = None,
    seed: Optional[int] = None,
    prefix_len: int = 0,
    adaptive: Union[bool, AdaptiveDraft] = True,
) -> Iterator[int]:
    """Self-speculative counterpart of ``generate_tokens`` (same arguments, same output for
    greedy, same distribution for sampling). ``prompt`` holds every token of the context; the first
    ``prefix_len`` of them must already be in ``cache`` (a chat's earlier turns).

    ``adaptive`` (default on; or an ``AdaptiveDraft`` to tune) picks how many heads draft each
    round from recent acceptance and measured speed, down to none (plain steps with an occasional
    probe), so a model whose heads do not pay decodes at plain speed; False drafts with every
    head (of ``num_draft``) each round."""
    stop = set(stop)
    stats = stats if stats is not None else GenerationStats()
    cache = cache if cache is not None else model.make_cache()
    drafter = drafter or make_drafter(model, num_draft)
    ctrl = adaptive if isinstance(adaptive, AdaptiveDraft) else None
    if adaptive is True:
        ctrl = AdaptiveDraft(drafter.K)
    if seed is None:  # follow mx.random.seed so runs are reproducible like plain sampling
        seed = int(mx.random.randint(0, 2**31 - 1, shape=()).item())
    rng = np.random.default_rng(seed)
    tokens = list(prompt)
    t0 = time.perf_counter()
    h0 = prefill(model, mx.array(tokens[prefix_len:], dtype=mx.int32), cache)
    drafter.reset(prefix_len)
    drafter.observe(h0, prefix_len)
    y = sample(target_logprobs(model.logits(h0[:, -1, :]), penalty_history(tokens, cfg), cfg), cfg)
    tokens.append(y.item())
    stats.prompt_tokens += len(tokens) - 1 - prefix_len
    stats.prefill_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    n = 0
    last = None  # (k, tokens produced, timed?) of the previous action, timed until this one
    t_mark = t0
    try:
        pending = [tokens[-1]]
        while True:
            for tok in pending:  # hand out this round's tokens
                n += 1
                stats.generated += 1
                yield tok
                if n >= max_tokens or tok in stop:
                    return
            now = time.perf_counter()
            if ctrl is not None and last is not None:
                ctrl.update(last[0], last[1], now - t_mark if last[2] else None)
            t_mark = now
            k = ctrl.choose() if ctrl is not None else drafter.K
            T = len(tokens) - 2  # trunk states known through T; tokens[T+1] not yet fed
            if k == 0:  # drafting does not pay now: plain steps, heads catch up later
                states = []
                burst = min(ctrl.burst_len, max_tokens - n)  # never feed past the last token
                for tok, h in _plain_burst(model, tokens, cfg, cache, burst):
                    states.append(h)
                    n += 1
                    stats.generated += 1
                    yield tok
                    if n >= max_tokens or tok in stop:
                        return
                drafter.observe(mx.concatenate(states, axis=1), T + 1)
                last, pending = (0, len(states), True), []
                continue
            drafts, q = drafter.draft(tokens, cfg, k)
            h = model.hidden(
                mx.concatenate([mx.array(tokens[-1:], dtype=mx.int32), drafts])[None], cache=cache
            )  # (1, k+1, D): verify every draft in one pass
            logits = model.logits(h)[0]  # (k+1, V)
            if cfg.repetition_penalty != 1.0:  # position i's history includes d_1..d_i
                ctx = mx.array(tokens, dtype=mx.int32)
                rows = [
                    target_logprobs(
                        logits[i : i + 1],
                        penalty_history(mx.concatenate([ctx, drafts[:i]]), cfg),
                        cfg,
                    )
                    for i in range(k + 1)
                ]
                lp = mx.concatenate(rows)
            else:
                lp = target_logprobs(logits, None, cfg)
            if cfg.greedy:
                target = mx.argmax(lp, axis=-1)
                mx.eval(drafts, target, h)
                a, bonus = _accept_greedy(np.array(drafts), np.array(target))
            else:
                mx.eval(drafts, lp, q, h)
                p = np.exp(np.array(lp, dtype=np.float64))
                a, bonus = accept_sampled(np.array(drafts), p, np.exp(np.array(q, np.float64)), rng)
            for c in cache:  # keep x_{T+1} and the a accepted drafts
                c.trim(k - a)
            drafter.commit(T, a)
            drafter.observe(h[:, : a + 1], T + 1)
            pending = [int(d) for d in np.array(drafts)[:a]] + [bonus]
            tokens.extend(pending)
            # a round right after prefill or a burst also paid the heads' catch-up: not timed
            last = (k, a + 1, last is not None and last[0] > 0)
            stats.rounds += 1
            stats.accepted += a
            stats.drafted += k
            stats.accept_hist.append(a)
            stats.draft_hist.append(k)
    finally:
        stats.decode_s += time.perf_counter() - t0
