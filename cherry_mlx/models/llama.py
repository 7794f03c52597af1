"""The cherry backbone: mlx-lm's Llama with an optional weight-tied recurrent core.

Module structure and weight names are exactly mlx-lm's ``models/llama.py`` (``model.embed_tokens``,
``model.layers.N.*``, ``model.norm``, ``lm_head``), and mlx-lm's blocks are reused, so any
Llama-family checkpoint loads and a non-recurrent cherry checkpoint loads in plain ``mlx_lm.load``.

What we add:
- ``recurrence`` (paper §3.3.2): the unique layers are split into prelude P, core C and coda Q; the
  forward pass runs ``P + loops*C + Q`` blocks by *calling the same core modules again* (weights
  exist once; MLX builds the lazy graph per loop and evaluates once). The order of block calls is
  ``schedule``; there is one KV cache per schedule step, i.e. per (layer, loop).
- ``hidden`` / ``logits`` split so losses can compute logits only where they are needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import mlx.core as mx
import mlx.nn as nn
from mlx.nn.utils import checkpoint as checkpointed
from mlx_lm.models import llama as mlx_llama
from mlx_lm.models.base import create_attention_mask
from mlx_lm.models.cache import KVCache

from cherry_mlx.models.families import (
    ARRAY_MASK,
    SLIDING,
    default_layer_types,
    embed_scale,
    make_block,
    make_norm,
    normalise_args,
)
from cherry_mlx.models.mtp import MTPHeads


@dataclass
class ModelArgs(mlx_llama.ModelArgs):
    model_type: str = "llama"
    hidden_size: int = 128
    num_hidden_layers: int = 2
    intermediate_size: int = 352
    num_attention_heads: int = 4
    rms_norm_eps: float = 1e-5
    vocab_size: int = 256
    # cherry keys (absent from plain Llama configs, ignored by mlx-lm's llama):
    # {"prelude": P, "core": C, "coda": Q, "loops": n}; P + C + Q == num_hidden_layers
    recurrence: Optional[Dict[str, int]] = None
    # merged layer j = mean of source layers merge_map[j] (provenance only)
    merge_map: Optional[List[List[int]]] = None
    # multi-token prediction heads (serving/fusion phases), e.g. {"num_heads": 3}
    mtp: Optional[Dict[str, Any]] = None
    # transformers >= 5 keeps rope_theta / rope scaling here (see families.normalise_args)
    rope_parameters: Optional[Dict[str, Any]] = None
    # read by the phi3 and gemma3_text blocks only (None elsewhere: saved configs stay clean)
    partial_rotary_factor: Optional[float] = None
    original_max_position_embeddings: Optional[int] = None
    rope_local_base_freq: Optional[float] = None
    query_pre_attn_scalar: Optional[float] = None
    sliding_window_pattern: Optional[int] = None
    attn_logit_softcapping: Optional[float] = None  # gemma2
    final_logit_softcapping: Optional[float] = None  # gemma2: tanh cap on the logits

    def __post_init__(self):
        # A config copied from a model with another depth carries a stale layer_types list that
        # would silently rebuild the old layer count (a pitfall seen in practice): rebuild it.
        if self.layer_types is not None and len(self.layer_types) != self.num_hidden_layers:
            self.layer_types = None
        default_layer_types(self)
        super().__post_init__()
        normalise_args(self)  # llama, mistral, qwen2, qwen3: see families.py
        if self.recurrence is not None:
            r = self.recurrence
            p, c, q, n = (int(r.get(k, 0)) for k in ("prelude", "core", "coda", "loops"))
            if p + c + q != self.num_hidden_layers or c < 0 or n < 1:
                raise ValueError(
                    f"recurrence {r} needs prelude+core+coda == num_hidden_layers "
                    f"({self.num_hidden_layers}) and loops >= 1"
                )

    @property
    def schedule(self) -> List[int]:
        """Unique-layer index called at each effective depth step."""
        n = self.num_hidden_layers
        if self.recurrence is None:
            return list(range(n))
        r = self.recurrence
        p, c, loops = int(r["prelude"]), int(r["core"]), int(r["loops"])
        core = list(range(p, p + c))
        return list(range(p)) + core * loops + list(range(p + c, n))

    @property
    def effective_depth(self) -> int:
        return len(self.schedule)


class LlamaModel(nn.Module):
    """Embedding, unique blocks called in ``schedule`` order, final norm."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.vocab_size = args.vocab_size
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = [make_block(args, t) for t in args.layer_types]
        self.norm = make_norm(args)
        self._scale = embed_scale(args)
        self._schedule = tuple(args.schedule)
        # Gradient checkpointing per block call (trades recompute for activation memory).
        self.checkpoint = False

    @property
    def schedule(self):
        return self._schedule

    def embed(self, inputs):
        """Token embeddings as the first block reads them (Gemma: times sqrt(hidden))."""
        h = self.embed_tokens(inputs)
        return h * mx.array(self._scale, dtype=h.dtype) if self._scale is not None else h

    def layer_masks(self, h, cache=None) -> list:
        """The attention mask of each unique layer (by index) for hidden states ``h`` (B, T, D)
        after ``cache``'s tokens: causal, or windowed for a sliding layer; an array where the
        family's block needs one (Gemma 2 soft-caps the scores itself)."""
        array = self.args.model_type in ARRAY_MASK
        mask = create_attention_mask(h, cache, return_array=array)
        window = mask
        if SLIDING in self.args.layer_types:
            w = self.args.sliding_window
            window = create_attention_mask(h, cache, window_size=w, return_array=array)
        return [window if t == SLIDING else mask for t in self.args.layer_types]

    def __call__(self, inputs, cache=None, input_embeddings=None):
        if input_embeddings is None:
            h = self.embed(inputs)
        else:
            h = input_embeddings
            if self._scale is not None:
                h = h * mx.array(self._scale, dtype=h.dtype)
        if cache is None:
            cache = [None] * len(self._schedule)
        # every cache has the same length: one mask per layer kind
        masks = self.layer_masks(h, cache[0])
        for idx, c in zip(self._schedule, cache):
            layer = self.layers[idx]
            m = masks[idx]
            if self.checkpoint and c is None:
                h = checkpointed(layer)(h, m)
            else:
                h = layer(h, m, cache=c)
        return self.norm(h)


class Model(nn.Module):
    """mlx-lm model contract: ``__call__(inputs, cache, input_embeddings) -> logits``."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.model_type = args.model_type
        self.model = LlamaModel(args)
        if not args.tie_word_embeddings:
            self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)
        if args.mtp:  # multi-token prediction heads (``mtp.`` prefix): MTP loss and drafter only
            self.mtp = MTPHeads(args)

    def hidden(self, inputs, cache=None, input_embeddings=None) -> mx.array:
        """Final-norm hidden states (B, L, D): take logits only at the positions a loss needs."""
        return self.model(inputs, cache, input_embeddings)

    def logits(self, h: mx.array) -> mx.array:
        if self.args.tie_word_embeddings:
            out = self.model.embed_tokens.as_linear(h)
        else:
            out = self.lm_head(h)
        cap = self.args.final_logit_softcapping
        return out if not cap else mx.tanh(out / cap) * cap

    def __call__(self, inputs, cache=None, input_embeddings=None):
        return self.logits(self.hidden(inputs, cache, input_embeddings))

    def sanitize(self, weights: Dict[str, mx.array]) -> Dict[str, mx.array]:
        weights = {k: v for k, v in weights.items() if "rotary_emb.inv_freq" not in k}
        if self.args.tie_word_embeddings:
            weights.pop("lm_head.weight", None)
        return weights

    @property
    def layers(self):
        return self.model.layers

    def make_cache(self) -> List[KVCache]:
        # One cache per block *call*: a looped core layer attends to its own keys of that loop.
        return [KVCache() for _ in self.model.schedule]
