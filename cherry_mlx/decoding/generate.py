"""Plain autoregressive generation as small pure functions (gpt-fast style).

``prefill`` (prompt -> hidden states), ``decode_step`` (one token -> logits), ``target_logprobs``
(logits -> the exact distribution we sample from) and ``sample`` compose into ``generate_tokens``.
Speculative decoding (``speculative.py``) reuses ``target_logprobs`` so both paths sample from the
same distribution.

Sampling reuses mlx-lm's pieces (``mlx_lm.sample_utils``): repetition penalty as a logits processor
over the recent tokens, then top-p, min-p, top-k masks on log-probabilities (mlx-lm's order), then
temperature. ``temp == 0`` is greedy (argmax after the processors).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from typing import Iterable, Iterator, List, Optional, Sequence

import mlx.core as mx
from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p, make_repetition_penalty

from cherry_mlx.decoding.settings import SamplingConfig
from cherry_mlx.models.mtp import has_mtp

PREFILL_STEP = 512
LONG_PREFILL = 2048  # prompts at least this long show the prefill's progress


@dataclass
class GenerationStats:
    """Counters for ``/stats`` and the benchmark."""

    prompt_tokens: int = 0
    generated: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    rounds: int = 0  # speculative verify passes
    accepted: int = 0  # drafted tokens accepted
    drafted: int = 0
    accept_hist: List[int] = field(default_factory=list)
    draft_hist: List[int] = field(default_factory=list)  # drafts per round (adaptive: varies)

    @property
    def decode_tps(self) -> float:
        return self.generated / self.decode_s if self.decode_s > 0 else 0.0

    @property
    def prefill_tps(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def mean_accepted(self) -> float:
        """Tokens produced per trunk verify pass (accepted drafts + the trunk's own token)."""
        return (self.accepted + self.rounds) / self.rounds if self.rounds else 0.0

    def summary(self) -> str:
        s = (
            f"prompt {self.prompt_tokens} tok at {self.prefill_tps:.1f} tok/s, "
            f"generated {self.generated} tok at {self.decode_tps:.1f} tok/s"
        )
        if self.rounds:
            rate = self.accepted / max(self.drafted, 1)
            s += (
                f", speculative: accepted length {self.mean_accepted:.2f} tok/verify pass "
                f"({self.rounds} passes), draft acceptance {rate:.1%}"
            )
        return s


def mask_beyond(logits: mx.array, limit: Optional[int]) -> mx.array:
    """(..., V) logits with ids >= ``limit`` set to -inf (unchanged when V <= limit)."""
    if limit is None or logits.shape[-1] <= limit:
        return logits
    keep = mx.arange(logits.shape[-1]) < limit  # (V,)
    return mx.where(keep, logits, mx.array(-mx.inf, dtype=logits.dtype))


def limit_to_tokenizer(cfg: SamplingConfig, model, tokenizer) -> SamplingConfig:
    """``cfg`` with ``vocab_limit`` = the tokenizer's size when the model's vocabulary is larger
    (a padded or randomly initialised embedding): ids past the tokenizer have no text, and its
    detokenizer fails on them."""
    n, v = len(tokenizer), getattr(getattr(model, "args", None), "vocab_size", None)
    if v is None or v <= n or (cfg.vocab_limit is not None and cfg.vocab_limit <= n):
        return cfg
    return replace(cfg, vocab_limit=n)


def target_logprobs(logits: mx.array, history: Optional[mx.array], cfg: SamplingConfig) -> mx.array:
    """The distribution sampled from, as log-probabilities (already at temperature). (1, V) ->
    (1, V). For greedy decoding only its argmax matters."""
    logits = mask_beyond(logits.astype(mx.float32), cfg.vocab_limit)
    if cfg.repetition_penalty != 1.0 and history is not None and history.size:
        logits = make_repetition_penalty(cfg.repetition_penalty, cfg.repetition_context)(
            history, logits
        )
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    if cfg.greedy:
        return logprobs
    if cfg.top_p < 1.0:
        logprobs = apply_top_p(logprobs, cfg.top_p)
    if cfg.min_p > 0:
        logprobs = apply_min_p(logprobs, cfg.min_p)
    if 0 < cfg.top_k < logprobs.shape[-1]:
        logprobs = apply_top_k(logprobs, cfg.top_k)
    scaled = logprobs / cfg.temp
    return scaled - mx.logsumexp(scaled, axis=-1, keepdims=True)


def sample(logprobs: mx.array, cfg: SamplingConfig) -> mx.array:
    """(1, V) log-probabilities from ``target_logprobs`` -> (1,) token."""
    if cfg.greedy:
        return mx.argmax(logprobs, axis=-1)
    return mx.random.categorical(logprobs)


def prefill(model, tokens: mx.array, cache, step: int = PREFILL_STEP) -> mx.array:
    """Feed a (L,) prompt through the trunk in chunks; returns its final hidden states (1, L, D)
    (every position: the drafter's heads need them)."""
    hs = []
    long = tokens.size >= LONG_PREFILL  # seconds to minutes on a CPU: say how far it is
    t0 = time.perf_counter()
    for i in range(0, tokens.size, step):
        h = model.hidden(tokens[None, i : i + step], cache=cache)
        mx.eval(h)
        hs.append(h)
        if long:
            done = min(i + step, tokens.size)
            print(f"\r[prefill {done}/{tokens.size} prompt tokens, "
                  f"{time.perf_counter() - t0:.0f}s]", end="" if done < tokens.size else "\n",
                  file=sys.stderr, flush=True)  # fmt: skip
    return hs[0] if len(hs) == 1 else mx.concatenate(hs, axis=1)


def decode_step(model, token: mx.array, cache) -> mx.array:
    """One token (1,) -> next-token logits (1, V), filling the cache (lazy)."""
    return model(token[None], cache=cache)[:, -1, :]


def penalty_history(tokens, cfg: SamplingConfig) -> Optional[mx.array]:
    """The tokens the repetition penalty looks at: the last ``repetition_context`` of ``tokens``
    (a list or an (L,) array); None when the penalty is off. The one rule for plain and
    speculative decoding, so both sample from the same distribution."""
    if cfg.repetition_penalty == 1.0 or len(tokens) == 0:
        return None
    return mx.array(tokens[-cfg.repetition_context :], dtype=mx.int32)


def generate_tokens(
    model,
    prompt: Sequence[int],
    cfg: SamplingConfig = SamplingConfig(),
    max_tokens: int = 256,
    cache=None,
    stop: Iterable[int] = (),
    stats: Optional[GenerationStats] = None,
    prefix_len: int = 0,
) -> Iterator[int]:
    """Plain decoding: yields tokens as they are produced, stops after a ``stop`` token (which is
    yielded) or ``max_tokens``. ``cache`` (``model.make_cache()``) is filled in place, so a chat
    can continue from it; the cache holds the prompt and the yielded tokens, except possibly the
    last one (check ``cache[0].offset``). ``prompt`` holds the whole context; its first
    ``prefix_len`` tokens must already be in ``cache``.

    The next step is queued with ``mx.async_eval`` before the current token is handed out
    (mlx-lm's trick), so detokenising and printing overlap the model's work.
    """
    stop = set(stop)
    stats = stats if stats is not None else GenerationStats()
    cache = cache if cache is not None else model.make_cache()
    tokens = list(prompt)
    t0 = time.perf_counter()
    if not 0 <= prefix_len < len(tokens):
        raise ValueError(f"prefix_len {prefix_len} must leave at least one of {len(tokens)} tokens")
    h = prefill(model, mx.array(tokens[prefix_len:], dtype=mx.int32), cache)
    y = sample(target_logprobs(model.logits(h[:, -1, :]), penalty_history(tokens, cfg), cfg), cfg)
    mx.eval(y)
    stats.prompt_tokens += len(tokens) - prefix_len
    stats.prefill_s += time.perf_counter() - t0
    t0 = time.perf_counter()
    n = 0
    # Without a repetition penalty the next step does not need this token's *value*: queue it
    # before waiting for this one (mlx-lm's pipelining; a stop token may then be fed too).
    ahead = cfg.repetition_penalty == 1.0
    nxt = None
    try:
        while True:
            n += 1
            if ahead and n < max_tokens:
                nxt = sample(target_logprobs(decode_step(model, y, cache), None, cfg), cfg)
                mx.async_eval(nxt)
            tok = y.item()
            tokens.append(tok)
            last = n >= max_tokens or tok in stop
            if not ahead and not last:  # the penalty needs the history, this token included
                logits = decode_step(model, y, cache)
                nxt = sample(target_logprobs(logits, penalty_history(tokens, cfg), cfg), cfg)
                mx.async_eval(nxt)
            stats.generated += 1
            yield tok
            if last:
                break
            y = nxt
    finally:
        stats.decode_s += time.perf_counter() - t0


def check_serving_options(model, max_tokens: int, speculative, num_draft, seed=None) -> None:
    """Options of `generate` / `chat` that would otherwise be ignored or misread, as one error."""
    if seed is not None and not 0 <= seed < 2**63:
        raise ValueError(f"--seed {seed} must be a non-negative integer")

    if max_tokens < 1:
        raise ValueError(f"--max-tokens {max_tokens} must be >= 1")
    if (speculative or num_draft is not None) and not has_mtp(model):
        flag = "--speculative" if speculative else f"--num-draft {num_draft}"
        raise ValueError(f"{flag} needs a model with MTP heads (config key 'mtp')")
    if num_draft is not None and speculative is False:
        raise ValueError(
            f"--num-draft {num_draft} drafts for speculative decoding: drop it or "
            "drop --no-speculative"
        )
