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

Config keys under ``mtp``: ``num_heads``; ``kind`` (``sequential``, above, or ``cross``: heads that
cross-attend to the trunk's states, ``models.mtp_cross``); ``draft_vocab`` (optional sorted token
ids: the drafter scores only these, EAGLE-3's reduced draft vocabulary; the trunk verifies with
the full one, so greedy output does not change).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.models.base import create_attention_mask
from mlx_lm.models.cache import KVCache

from cherry_mlx.models.families import make_block
from cherry_mlx.models.mtp_base import HeadBase
from cherry_mlx.models.mtp_cross import CrossMTPHead

DEFAULT_NUM_HEADS = 3
KINDS = ("sequential", "cross")


def num_heads(mtp: Optional[Dict[str, Any]]) -> int:
    """K from a config's ``mtp`` key (``{"num_heads": K}``; default 3)."""
    if not mtp:
        return 0
    k = int(mtp.get("num_heads", DEFAULT_NUM_HEADS))
    if k < 1:
        raise ValueError(f"mtp.num_heads must be >= 1, got {k}; set e.g. {{'num_heads': 3}}")
    return k


def head_kind(mtp: Optional[Dict[str, Any]]) -> str:
    """``sequential`` (DeepSeek-V3 style, the default) or ``cross`` (cross-attention heads)."""
    kind = (mtp or {}).get("kind", "sequential")
    if kind not in KINDS:
        raise ValueError(f"mtp.kind {kind!r}: use one of {', '.join(KINDS)}")
    return kind


def draft_vocab(mtp: Optional[Dict[str, Any]]) -> Optional[List[int]]:
    """The reduced draft vocabulary (sorted token ids) or None (draft from the full vocabulary)."""
    ids = (mtp or {}).get("draft_vocab")
    return [int(i) for i in ids] if ids else None


class MTPHead(HeadBase):
    """One sequential MTP module: two norms, a 2D -> D projection, a block and an output norm."""

    def __init__(self, args):
        super().__init__(args, make_block(args))

    def __call__(self, h_prev: mx.array, emb: mx.array, cache=None) -> mx.array:
        """(B, L, D) previous states, (B, L, D) token embeddings -> (B, L, D) normed head states."""
        x = self.proj(mx.concatenate([self.hnorm(h_prev), self.enorm(emb)], axis=-1))
        mask = create_attention_mask(x, cache)
        return self.norm(self.block(x, mask, cache=cache))


class MTPHeads(nn.Module):
    """K sequential heads; ``model.mtp`` when the config has an ``mtp`` key."""

    def __init__(self, args):
        super().__init__()
        self.kind = head_kind(args.mtp)
        cls = CrossMTPHead if self.kind == "cross" else MTPHead
        self.heads = [cls(args) for _ in range(num_heads(args.mtp))]

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
            if self.kind == "cross":  # reads trunk states 0..t at position t
                h = head(h[:, : L - k], emb[:, k:], h0[:, : L - k])  # (B, L-k, D)
            else:
                h = head(h[:, : L - k], emb[:, k:])  # (B, L-k, D)
            states.append(h)
        return states


def add_mtp_heads(model, num: int = DEFAULT_NUM_HEADS, kind: Optional[str] = None) -> None:
    """Give an existing model K fresh (random) heads, e.g. to train them on a frozen trunk."""
    kind = kind or head_kind(model.args.mtp)
    model.args.mtp = {
        **(model.args.mtp or {}),
        "num_heads": int(num),
        "kind": head_kind({"kind": kind}),
    }
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


def ensure_mtp_heads(model, num: int, kind: Optional[str] = None) -> Dict[str, Any]:
    """Add ``num`` fresh heads unless the model already has that many (of ``kind``, when given);
    returns the config key."""
    same_kind = kind is None or (has_mtp(model) and model.mtp.kind == kind)
    if not has_mtp(model) or model.mtp.num_heads != num or not same_kind:
        add_mtp_heads(model, num, kind)
    return dict(model.args.mtp)


def set_draft_vocab(model, ids: Optional[List[int]]) -> Dict[str, Any]:
    """Store the reduced draft vocabulary (or drop it with None); returns the config key."""
    if not has_mtp(model):
        raise ValueError("model has no MTP heads; a draft vocabulary needs them (--mtp K)")
    mtp = {k: v for k, v in model.args.mtp.items() if k != "draft_vocab"}
    if ids:
        ids = sorted({int(i) for i in ids})
        V = model.args.vocab_size
        if ids[0] < 0 or ids[-1] >= V:
            raise ValueError(
                f"draft vocabulary ids must lie in 0..{V - 1}; got {ids[0]}..{ids[-1]}"
            )
        mtp["draft_vocab"] = ids
    model.args.mtp = mtp
    return dict(mtp)


def draft_rows(model, ids: mx.array) -> mx.array:
    """LM-head rows of the draft tokens (N, D), read from the weight when it is a plain matrix
    (tied embedding or unquantised ``lm_head``), else through ``model.logits`` (any other head)."""
    emb = model.model.embed_tokens
    if model.args.tie_word_embeddings and type(emb) is nn.Embedding:
        return emb.weight[ids]
    head = getattr(model, "lm_head", None)
    if not model.args.tie_word_embeddings and type(head) is nn.Linear:
        return head.weight[ids]
    return model.logits(mx.eye(model.args.hidden_size))[:, ids].T


def init_heads_from_trunk(model, layer: int = -1) -> None:
    """Start every head as a near copy of the trunk (EAGLE initialises its draft layer from the
    target's): the head's block takes trunk layer ``layer``'s weights (those with matching names
    and shapes), its output norm the trunk's final norm, and its projection adds the two normed
    inputs (previous state + next token's embedding), so the block sees a residual stream that
    carries both the context and the token. Random heads start far from the trunk's
    distribution and need many more tokens to agree with it."""
    if not has_mtp(model):
        raise ValueError("model has no MTP heads to initialise; add them first (--mtp K)")
    src = dict(tree_flatten(model.layers[layer].parameters()))
    d = model.args.hidden_size
    eye = mx.eye(d)
    for head in model.mtp.heads:
        mine = dict(tree_flatten(head.block.parameters()))
        new = {k: mx.array(src[k]) for k, v in mine.items() if k in src and src[k].shape == v.shape}
        if not new:
            raise ValueError("no trunk layer weight fits the MTP head block; use random heads")
        if "memory_norm.weight" in mine and "input_layernorm.weight" in src:
            new["memory_norm.weight"] = mx.array(src["input_layernorm.weight"])
        head.block.update(tree_unflatten(list(new.items())))
        head.norm.weight = mx.array(model.model.norm.weight)
        head.proj.weight = mx.concatenate([eye, eye], axis=1).astype(head.proj.weight.dtype)
    mx.eval(model.mtp.parameters())
