"""The Cabstractor (paper Section 5.4): N frozen feature streams -> soft tokens for the LM.

Learned queries (81 in the paper) read the streams through cross-attention layers (3 in the
paper). Each frozen extractor (vision, fine-grained vision, multilingual visual, audio) is one
stream, and the streams are combined by soft-MoE gating: in every layer each query attends to each
stream separately and mixes the per-stream results with softmax gate weights over the streams, so
no single extractor is hard-wired and a missing or useless one can be weighted down. The queries
come out as ``num_queries`` soft tokens of the LM's hidden size, placed before the text through
the model's ``input_embeddings`` argument; only the Cabstractor is trained, the LM stays frozen.

With width 1024, four 1024-wide streams and the CHERRY-1.8B hidden size 1536 this is ~44M
parameters, the paper's ~42M scale (``CabstractorConfig.paper``).

This module is the fusion encoder itself; "fuse" elsewhere in this package means assembling
compressed experts into an MoEE model, not this.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence

import mlx.core as mx
import mlx.nn as nn


@dataclass
class CabstractorConfig:
    """Shape of the encoder; ``feature_dims`` has one width per frozen extractor."""

    feature_dims: List[int] = field(default_factory=lambda: [1024])
    out_dims: int = 1536  # the LM's hidden size
    dims: int = 1024  # width of queries and attention
    num_queries: int = 81
    num_layers: int = 3
    num_heads: int = 8
    mlp_ratio: int = 4

    @classmethod
    def paper(cls) -> "CabstractorConfig":
        """Section 5.4's shape: 81 queries, 3 layers, 4 extractor streams into a 1536-wide LM."""
        return cls(feature_dims=[1024] * 4)

    def as_dict(self) -> dict:
        return asdict(self)


def gate_weights(logits: mx.array) -> mx.array:
    """Soft-MoE gate: (B, Q, N) logits -> (B, Q, N) weights over streams, summing to 1."""
    return mx.softmax(logits.astype(mx.float32), axis=-1).astype(logits.dtype)


class CrossLayer(nn.Module):
    """Queries attend to each stream; a gate mixes the streams per query; then an MLP."""

    def __init__(self, cfg: CabstractorConfig):
        super().__init__()
        d, n = cfg.dims, len(cfg.feature_dims)
        self.norm_q = nn.LayerNorm(d)
        self.norm_kv = nn.LayerNorm(d)
        self.attn = nn.MultiHeadAttention(d, cfg.num_heads, bias=True)
        self.gate = nn.Linear(d, n)  # per-query preference over the N streams
        self.norm_mlp = nn.LayerNorm(d)
        self.mlp = nn.Sequential(
            nn.Linear(d, cfg.mlp_ratio * d), nn.GELU(), nn.Linear(cfg.mlp_ratio * d, d)
        )

    def __call__(
        self,
        q: mx.array,
        streams: Sequence[mx.array],
        stream_bias: mx.array,
        masks: Sequence[Optional[mx.array]],
    ):
        """q (B, Q, D); streams N x (B, T_i, D); stream_bias (B, 1, N) -> (q, gate (B, Q, N))."""
        hq = self.norm_q(q)
        outs = []
        for x, mask in zip(streams, masks):
            kv = self.norm_kv(x)
            m = None if mask is None else mx.where(mask[:, None, None, :], 0.0, -1e9)
            outs.append(self.attn(hq, kv, kv, mask=m))  # (B, Q, D)
        g = gate_weights(self.gate(hq) + stream_bias)  # (B, Q, N)
        mixed = sum(g[..., i : i + 1] * o for i, o in enumerate(outs))  # (B, Q, D)
        q = q + mixed
        return q + self.mlp(self.norm_mlp(q)), g


class Cabstractor(nn.Module):
    """``(streams) -> soft tokens (B, num_queries, out_dims)``."""

    def __init__(self, cfg: CabstractorConfig):
        super().__init__()
        if not cfg.feature_dims:
            raise ValueError("Cabstractor needs at least one feature stream (feature_dims)")
        self.cfg = cfg
        d = cfg.dims
        self.queries = mx.random.normal((cfg.num_queries, d)) * 0.02
        self.inputs = [nn.Linear(f, d) for f in cfg.feature_dims]  # one per extractor
        # stream-level evidence for the gate, from each stream's mean feature: lets the gate
        # depend on the example, not only on the (learned, example-independent) query
        self.stream_score = nn.Linear(d, 1)
        self.layers = [CrossLayer(cfg) for _ in range(cfg.num_layers)]
        self.norm_out = nn.LayerNorm(d)
        self.out = nn.Linear(d, cfg.out_dims)

    def encode(self, features: Sequence[mx.array], masks=None):
        """features: N arrays (B, T_i, F_i) (or (B, F_i) for one vector per example); masks:
        N optional (B, T_i) bools (True = real token). Returns soft tokens and the gates of each
        layer (list of (B, Q, N))."""
        if len(features) != len(self.inputs):
            raise ValueError(
                f"Cabstractor was built for {len(self.inputs)} feature streams, got "
                f"{len(features)}; pass one array per extractor in the same order"
            )
        masks = list(masks) if masks is not None else [None] * len(features)
        streams = []
        for proj, x in zip(self.inputs, features):
            x = x[:, None, :] if x.ndim == 2 else x  # (B, T, F)
            streams.append(proj(x))  # (B, T, D)
        pooled = []
        for x, m in zip(streams, masks):
            if m is None:
                pooled.append(x.mean(axis=1))
            else:
                w = m.astype(x.dtype)[..., None]  # (B, T, 1)
                pooled.append((x * w).sum(axis=1) / mx.maximum(w.sum(axis=1), 1.0))
        bias = mx.concatenate([self.stream_score(p) for p in pooled], axis=-1)[:, None, :]
        batch = streams[0].shape[0]
        q = mx.broadcast_to(self.queries[None], (batch, *self.queries.shape))  # (B, Q, D)
        gates = []
        for layer in self.layers:
            q, g = layer(q, streams, bias, masks)
            gates.append(g)
        return self.out(self.norm_out(q)), gates

    def __call__(self, features: Sequence[mx.array], masks=None) -> mx.array:
        return self.encode(features, masks)[0]


def text_logits(lm: nn.Module, soft: mx.array, ids: mx.array) -> mx.array:
    """Next-token logits for every token of ``ids`` (B, L) when the soft tokens (B, Q, H) come
    first: the LM reads [soft, ids[:-1]] through ``input_embeddings``, so ``ids[:, 0]`` is
    predicted from the soft tokens alone and ``ids[:, j]`` from them and ``ids[:, :j]``.
    Returns (B, L, V)."""
    text = lm.model.embed_tokens(ids[:, :-1])  # (B, L - 1, H)
    h = mx.concatenate([soft.astype(text.dtype), text], axis=1)  # (B, Q + L - 1, H)
    logits = lm(ids, input_embeddings=h)  # (B, Q + L - 1, V)
    return logits[:, soft.shape[1] - 1 :]
