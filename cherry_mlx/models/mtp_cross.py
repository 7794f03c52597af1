"""Cross-attention MTP heads (``mtp.kind = "cross"``): the paper's description of its oracle MTP.

The paper (§2, §5.3) describes "cross-attention prediction heads trained with future hidden states"
without equations; this is our reading of it. Head k at position t

    x   = W_k [ RMSNorm(h_{k-1,t}) ; RMSNorm(emb(x_{t+k})) ]            (as the sequential heads)
    y   = x + CrossAttn( norm(x) -> queries,  norm(h0_{0..t}) -> keys/values )
    h_k = norm( y + MLP(norm(y)) )

reads the trunk's final hidden states h0 at positions 0..t (everything the trunk has computed when
head k drafts at t; never a later one) instead of attending over its own states, and predicts token
t+k+1 through the shared LM head. "Trained with future hidden states": with
``--mtp-feature-weight`` the head's state is also regressed onto the trunk's *future* state
h0_{t+k} (the state that predicts the same token), as EAGLE trains its draft features.

Because a cross head has no self-attention over its own positions, drafting needs only the trunk's
committed states (one KV cache of projected trunk states per head) and one query per head and
round: no head state is ever built from a rejected draft.
"""

from __future__ import annotations

from typing import Optional

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models import llama as mlx_llama
from mlx_lm.models.base import scaled_dot_product_attention

from cherry_mlx.models.mtp_base import HeadBase


class CrossAttention(mlx_llama.Attention):
    """mlx-lm's Llama attention (same weight names, so a trunk layer's weights fit) with queries
    from the head's stream and keys/values from the trunk's states."""

    def __call__(self, x: mx.array, memory: mx.array, offset: int = 0, cache=None) -> mx.array:
        """x (B, Lq, D) at positions offset..offset+Lq-1; memory (B, Lm, D): new trunk states at
        positions cache.offset.. (0.. without a cache). Without a cache Lq == Lm and query i sees
        memory 0..i (causal); with one, a single query sees every cached position."""
        B, Lq, _ = x.shape
        Lm = memory.shape[1]
        q = self.q_proj(x).reshape(B, Lq, self.n_heads, -1).transpose(0, 2, 1, 3)
        k = self.k_proj(memory).reshape(B, Lm, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        v = self.v_proj(memory).reshape(B, Lm, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        q = self.rope(q, offset=offset)  # relative positions: query t vs memory s <= t
        k = self.rope(k, offset=cache.offset if cache is not None else 0)
        if cache is not None:
            assert Lq == 1, "cached cross-attention takes one query per call"
            k, v = cache.update_and_fetch(k, v)
            mask = None
        else:
            assert Lq == Lm, (Lq, Lm)
            mask = "causal" if Lq > 1 else None
        out = scaled_dot_product_attention(q, k, v, cache=None, scale=self.scale, mask=mask)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(B, Lq, -1))


class CrossBlock(nn.Module):
    """Pre-norm block: cross-attention to the (normed) trunk states, then the MLP. Weight names
    follow a Llama block (plus ``memory_norm``) so a trunk layer initialises it."""

    def __init__(self, args):
        super().__init__()
        d, eps = args.hidden_size, args.rms_norm_eps
        self.self_attn = CrossAttention(args)
        self.mlp = mlx_llama.MLP(args)
        self.input_layernorm = nn.RMSNorm(d, eps=eps)
        self.memory_norm = nn.RMSNorm(d, eps=eps)
        self.post_attention_layernorm = nn.RMSNorm(d, eps=eps)

    def __call__(self, x: mx.array, memory: mx.array, offset: int = 0, cache=None) -> mx.array:
        mem = self.memory_norm(memory)
        h = x + self.self_attn(self.input_layernorm(x), mem, offset, cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class CrossMTPHead(HeadBase):
    """One cross-attention MTP head: the sequential head's input projection, a cross block and an
    output norm (the LM head is the trunk's)."""

    def __init__(self, args):
        super().__init__(args, CrossBlock(args))

    def __call__(
        self,
        h_prev: mx.array,
        emb: mx.array,
        memory: mx.array,
        offset: int = 0,
        cache: Optional[object] = None,
    ) -> mx.array:
        """(B, L, D) previous states and token embeddings at positions offset..; memory: trunk
        states (see ``CrossAttention``) -> (B, L, D) normed head states."""
        x = self.proj(mx.concatenate([self.hnorm(h_prev), self.enorm(emb)], axis=-1))
        return self.norm(self.block(x, memory, offset, cache))
