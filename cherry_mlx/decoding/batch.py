"""Batched generation that keeps the trunk's final hidden states, for training MTP heads on the
model's own replies (EAGLE-3 trains its drafter on the target's generations, not on a data set).

mlx-lm's ``BatchGenerator`` returns tokens only; the heads also need every position's final-norm
state h0 and the trunk's greedy next token, both of which a decode step computes anyway. So this
is a small loop over the same pieces: prompts are left-padded into one batch with mlx-lm's
``BatchKVCache`` (per-row RoPE offsets and padding masks), prefilled in one call, then decoded
one token per row per step. Row ``b`` yields

    tokens (L,)   prompt + reply (the reply ends at a stop token or ``max_tokens``)
    hidden (L, D) the trunk's final-norm state at every position (float16 to halve the cache)
    greedy (L,)   the trunk's argmax next token at every position (= tokens[t+1] in a greedy
                  reply; differs where the reply was sampled or in the prompt)

A row's states in a batch may differ from a one-row run in the last bits (other matmul order);
they are training data, not a reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import BatchKVCache


@dataclass
class Generation:
    tokens: np.ndarray  # (L,) int32
    hidden: np.ndarray  # (L, D) float16
    greedy: np.ndarray  # (L,) int32
    prompt_len: int


def batch_generate_states(
    model,
    prompts: Sequence[Sequence[int]],
    max_tokens: int = 128,
    stop: Iterable[int] = (),
    temp: float = 0.0,
    seed: Optional[int] = None,
) -> List[Generation]:
    """Generate a reply to every prompt in one batch; returns one ``Generation`` per prompt (in
    order). ``temp`` 0 is greedy, otherwise plain sampling at that temperature."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    stop = set(int(s) for s in stop)
    B, n_max = len(prompts), max(len(p) for p in prompts)
    pad = [n_max - len(p) for p in prompts]
    x = mx.array([[0] * k + list(p) for k, p in zip(pad, prompts)], dtype=mx.int32)  # (B, P)
    cache = [BatchKVCache(pad) for _ in model.make_cache()]
    key = mx.random.key(seed if seed is not None else 0)

    def step(inp):
        h = model.hidden(inp, cache=cache)  # (B, l, D)
        logits = model.logits(h[:, -1, :])  # (B, V)
        g = mx.argmax(logits, axis=-1)  # (B,)
        return h, g, logits

    h, g, logits = step(x)
    h_all, g_all = [h[:, :-1]], []  # the last prompt position's state is stored with its token
    # greedy targets at prompt positions: argmax of the prefill logits, chunked to bound memory
    g_prompt = [
        mx.argmax(model.logits(h[:, i : min(i + 64, n_max - 1)]), axis=-1)
        for i in range(0, n_max - 1, 64)
    ]  # (B, <=64) each
    mx.eval(h, g, *g_prompt)
    out_tok = [[] for _ in range(B)]
    done = np.zeros(B, bool)
    last_h = h[:, -1:]
    for i in range(max_tokens):
        if temp > 0:
            key, sub = mx.random.split(key)
            y = mx.random.categorical(logits / temp, key=sub)
        else:
            y = g
        h_all.append(last_h)
        g_all.append(g)
        y_np = np.array(y)
        for b in range(B):
            if not done[b]:
                out_tok[b].append(int(y_np[b]))
                done[b] = y_np[b] in stop or len(out_tok[b]) >= max_tokens
        if done.all():
            break
        hs, g, logits = step(y[:, None].astype(mx.int32))
        last_h = hs
        mx.eval(hs, g, logits)
    hid = np.array(mx.concatenate(h_all, axis=1).astype(mx.float16))  # (B, P-1+n, D)
    gre = np.array(mx.concatenate(g_prompt + [mx.stack(g_all, axis=1)], axis=1))  # (B, P-1+n)
    res = []
    for b, p in enumerate(prompts):
        n = len(out_tok[b])
        lo = pad[b]
        # position t's state is stored for t = 0..L-2 (the last token is never fed)
        L = len(p) + n
        hb = hid[b, lo : lo + L - 1]
        gb = gre[b, lo : lo + L - 1].astype(np.int32)
        res.append(
            Generation(
                tokens=np.array(list(p) + out_tok[b], np.int32),
                hidden=hb,
                greedy=gb,
                prompt_len=len(p),
            )
        )
    return res
