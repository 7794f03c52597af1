"""Oracle multi-token prediction (MTP) heads, DeepSeek-V3 style (paper §3.4).

Head k (k = 1..K) at position t combines the previous state (the trunk's final hidden state h0_t
for k = 1, head k-1's output h_{k-1,t} otherwise) with the embedding of token t+k,

    h_k = Block_k( W_k [ RMSNorm(h_{k-1,t}) ; RMSNorm(emb(x_{t+k})) ] )        (concat + projection)

runs one transformer block (the trunk family's mlx-lm block, causal attention over head k's own
states) and predicts token t+k+1 through the *shared* LM head after its own final norm. In training
x_{t+k} is the true ("oracle") token; in self-speculative decoding it is the token drafted by head
k-1. Weights live under the ``mtp.`` prefix; only the MTP loss (``training.mtp``) and the drafter
use them, the trunk's forward pass never does.

Sequence form used by the loss: for inputs x_0..x_{L-1} head k has L-k positions t = 0..L-k-1
(token t+k = inputs[t+k], target token t+k+1 = targets[t+k]).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.base import create_attention_mask
from mlx_lm.models.cache import KVCache

from cherry_mlx.models.families import make_block

DEFAULT_NUM_HEADS = 3


def num_heads(mtp: Optional[Dict[str, Any]]) -> int:
    """K from a config's ``mtp`` key (``{"num_heads": K}``; default 3)."""
    if not mtp:
        return 0
    k = int(mtp.get("num_heads", DEFAULT_NUM_HEADS))
    if k < 1:
        raise ValueError(f"mtp.num_heads must be >= 1, got {k}; set e.g. {{'num_heads': 3}}")
    return k


class MTPHead(nn.Module):
    """One sequential MTP module: two norms, a 2D -> D projection, a block and an output norm."""

    def __init__(self, args):
        super().__init__()
        d, eps = args.hidden_size, args.rms_norm_eps
        self.hnorm = nn.RMSNorm(d, eps=eps)
        self.enorm = nn.RMSNorm(d, eps=eps)
        self.proj = nn.Linear(2 * d, d, bias=False)
        self.block = make_block(args)
        self.norm = nn.RMSNorm(d, eps=eps)

    def __call__(self, h_prev: mx.array, emb: mx.array, cache=None) -> mx.array:
        """(B, L, D) previous states, (B, L, D) token embeddings -> (B, L, D) normed head states."""
        x = self.proj(mx.concatenate([self.hnorm(h_prev), self.enorm(emb)], axis=-1))
        mask = create_attention_mask(x, cache)
        return self.norm(self.block(x, mask, cache=cache))


class MTPHeads(nn.Module):
    """K sequential heads; ``model.mtp`` when the config has an ``mtp`` key."""

    def __init__(self, args):
        super().__init__()
        self.heads = [MTPHead(args) for _ in range(num_heads(args.mtp))]

    @property
    def num_heads(self) -> int:
        return len(self.heads)

    def make_cache(self) -> List[KVCache]:
        return [KVCache() for _ in self.heads]

    def sequence_states(self, model, h0: mx.array, inputs: mx.array) -> List[mx.array]:
        """Training (oracle) form. (B, L, D) trunk states, (B, L) inputs -> K arrays (B, L-k, D)."""
        emb = model.model.embed_tokens(inputs)  # (B, L, D), shared embedding
        states, h = [], h0
        for k, head in enumerate(self.heads, start=1):
            L = inputs.shape[1]
            if L - k <= 0:
                break
            h = head(h[:, : L - k], emb[:, k:])  # (B, L-k, D)
            states.append(h)
        return states


def add_mtp_heads(model, num: int = DEFAULT_NUM_HEADS) -> None:
    """Give an existing model K fresh (random) heads, e.g. to train them on a frozen trunk."""
    model.args.mtp = {**(model.args.mtp or {}), "num_heads": int(num)}
    model.mtp = MTPHeads(model.args)
    mx.eval(model.mtp.parameters())


def has_mtp(model) -> bool:
    return getattr(model, "mtp", None) is not None


def freeze_for_mtp(model) -> None:
    """Freeze everything but the heads (adding heads to an existing model)."""
    if not has_mtp(model):
        raise ValueError("model has no MTP heads; add them first (add_mtp_heads or --mtp K)")
    model.freeze()
    model.mtp.unfreeze()


def ensure_mtp_heads(model, num: int) -> Dict[str, Any]:
    """Add ``num`` fresh heads unless the model already has that many; returns the config key."""
    if not has_mtp(model) or model.mtp.num_heads != num:
        add_mtp_heads(model, num)
    return dict(model.args.mtp)
