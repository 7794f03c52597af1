"""Mixture of Efficient Experts (paper §3.4): the fused model classes.

"Fuse" here means assembling several compressed cherry models into one routed model (not mlx-lm's
"fuse", which folds LoRA adapters into weights). Two granularities, chosen by the config key
``moee = {"granularity": ..., "num_experts": N, "top_k": k, ...}``:

- ``model`` (the paper's MoEE, ``MoEEModel``): N whole compressed models (merged, possibly
  looped) run side by side; a linear gate on the mean of their final hidden states picks top-k
  experts per token and mixes their outputs with the renormalised weights of Eq. 10. Every expert
  must run at every position whatever the routing (its later tokens attend to its own keys and
  values of this one), so routing saves no trunk compute: see ``flops.py``.
  With ``shared_embeddings`` the experts' embeddings and LM heads are replaced by one shared
  (averaged) pair; as the head is linear, mixing hidden states then applying it equals mixing
  logits. Without it each expert keeps its own head and ``hidden`` returns the weighted expert
  states side by side (B, L, N·D), so ``logits`` is still a linear map and losses may gather
  positions before it. MTP heads (``mtp.`` prefix) need the shared embedding.
- ``layer`` (Branch-Train-MiX / mergekit-moe style, ``LayerMoEEModel``): one trunk whose
  attention, norms and embeddings are the experts' average and whose every block has N expert
  FFNs (mlx-lm's ``SwitchGLU``, the experts' own SwiGLU weights) behind a per-layer router; only
  k FFNs run per token. Needs experts of identical shape.

Both expose the model contract (``__call__(inputs, cache)``, ``make_cache``, ``hidden``,
``logits``) plus ``route(inputs, cache) -> (h, aux)`` where ``aux`` lists (probs, inds) of every
routing decision, for the balance loss and the routing report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.switch_layers import SwitchGLU

from cherry_mlx.models.gate import Gate, dense_weights, topk_gate

# aliased: a self-contained model file (models.model_file) rebinds Model/ModelArgs to ours
from cherry_mlx.models.llama import Model as Trunk
from cherry_mlx.models.llama import ModelArgs as TrunkArgs
from cherry_mlx.models.mtp import MTPHeads

GRANULARITIES = ("model", "layer")
# Top-level keys that describe one expert's trunk, not the mixture (model granularity).
_TRUNK_KEYS = ("recurrence", "merge_map")


@dataclass
class MoEEArgs(TrunkArgs):
    # {"granularity": "model"|"layer", "num_experts": N, "top_k": k, "shared_embeddings": bool,
    #  "experts": [expert config, ...] (model granularity), "sources": [paths] (provenance)}
    moee: Optional[Dict[str, Any]] = None

    def __post_init__(self):
        super().__post_init__()
        m = self.moee
        if not m:
            raise ValueError("a MoEE config needs a 'moee' key; build one with cherry-mlx fuse")
        if m.get("granularity", "model") not in GRANULARITIES:
            raise ValueError(
                f"moee.granularity {m.get('granularity')!r} is not one of {GRANULARITIES}"
            )
        n, k = int(m["num_experts"]), int(m.get("top_k", 1))
        if not 1 <= k <= n:
            raise ValueError(f"moee.top_k={k} must be between 1 and num_experts={n}")


class _Log:
    """Plain holder for routing decisions (not an array/list/dict: MLX ignores it as a param)."""

    def __init__(self):
        self.items: List = []


class _SharedTrunk(nn.Module):
    """Shared embedding under the Llama name ``model.embed_tokens`` (MTP heads look for it)."""

    def __init__(self, vocab: int, dims: int):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dims)


class MoEEModel(nn.Module):
    """Whole-model routing over N expert ``Model``s (``experts.i.*`` weights)."""

    def __init__(self, args: MoEEArgs):
        super().__init__()
        self.args = args
        self.model_type = args.model_type
        m = args.moee
        self.num_experts, self.top_k = int(m["num_experts"]), int(m.get("top_k", 1))
        self.shared = bool(m.get("shared_embeddings", False))
        cfgs = m.get("experts") or []
        if len(cfgs) != self.num_experts:
            raise ValueError(
                f"moee lists {len(cfgs)} expert configs for num_experts={self.num_experts}"
            )
        self.experts = [Trunk(TrunkArgs.from_dict(c)) for c in cfgs]
        dims = {e.args.hidden_size for e in self.experts}
        vocab = {e.args.vocab_size for e in self.experts}
        if len(dims) != 1 or len(vocab) != 1:
            raise ValueError(
                f"experts differ in hidden size {sorted(dims)} or vocabulary {sorted(vocab)}: "
                "fuse models compressed from one base with one tokenizer"
            )
        self.dims = dims.pop()
        if self.shared:
            self.model = _SharedTrunk(args.vocab_size, self.dims)
            if not args.tie_word_embeddings:
                self.lm_head = nn.Linear(self.dims, args.vocab_size, bias=False)
            for e in self.experts:  # their own embeddings/heads are never used: drop them
                e.model.pop("embed_tokens")
                e.pop("lm_head", None)
        elif args.mtp:
            raise ValueError("MTP heads need the shared embedding and LM head: fuse with --shared")
        self.gate = Gate(self.dims, self.num_experts)
        if args.mtp:
            self.mtp = MTPHeads(args)
        self._ncache = [len(e.model.schedule) for e in self.experts]

    def _split_cache(self, cache):
        if cache is None:
            return [None] * self.num_experts
        out, i = [], 0
        for n in self._ncache:
            out.append(cache[i : i + n])
            i += n
        return out

    def route(self, inputs, cache=None, input_embeddings=None):
        """Mixed hidden state and routing. -> (h (B, L, D) or (B, L, N·D), [(probs, inds)])"""
        caches = self._split_cache(cache)
        if self.shared:
            h0 = (
                input_embeddings
                if input_embeddings is not None
                else self.model.embed_tokens(inputs)
            )
            hs = [e.model(None, c, input_embeddings=h0) for e, c in zip(self.experts, caches)]
        else:
            if input_embeddings is not None:
                raise ValueError("input_embeddings need a shared embedding (fuse with --shared)")
            hs = [e.model(inputs, c) for e, c in zip(self.experts, caches)]
        H = mx.stack(hs, axis=-2)  # (B, L, N, D)
        # The gate sees the experts' mean final state: contextual, and free since all experts ran.
        probs, inds, w = topk_gate(self.gate(H.mean(axis=-2)), self.top_k)  # (B,L,N) (B,L,k)
        wd = dense_weights(inds, w, self.num_experts)[..., None].astype(H.dtype)  # (B, L, N, 1)
        if self.shared:
            h = (H * wd).sum(axis=-2)  # (B, L, D)
        else:
            h = (H * wd).reshape(*H.shape[:-2], -1)  # (B, L, N·D)
        return h, [(probs, inds)]

    def hidden(self, inputs, cache=None, input_embeddings=None) -> mx.array:
        return self.route(inputs, cache, input_embeddings)[0]

    def logits(self, h: mx.array) -> mx.array:
        if self.shared:
            if self.args.tie_word_embeddings:
                return self.model.embed_tokens.as_linear(h)
            return self.lm_head(h)
        d = self.dims  # Σ_i head_i(ĝ_i h_i) = Σ_i ĝ_i logits_i  (Eq. 10 on the experts' outputs)
        out = None
        for i, e in enumerate(self.experts):
            part = e.logits(h[..., i * d : (i + 1) * d])
            out = part if out is None else out + part
        return out

    def __call__(self, inputs, cache=None, input_embeddings=None):
        return self.logits(self.hidden(inputs, cache, input_embeddings))

    def sanitize(self, weights: Dict[str, mx.array]) -> Dict[str, mx.array]:
        out = {}
        for k, v in weights.items():
            if "rotary_emb.inv_freq" in k:
                continue
            if k.startswith("experts.") and k.split(".", 2)[2] == "lm_head.weight":
                if self.shared or self.experts[int(k.split(".")[1])].args.tie_word_embeddings:
                    continue
            if k == "lm_head.weight" and (not self.shared or self.args.tie_word_embeddings):
                continue
            out[k] = v
        return out

    @property
    def layers(self):
        return [layer for e in self.experts for layer in e.layers]

    def make_cache(self):
        return [c for e in self.experts for c in e.make_cache()]


class MoEMLP(nn.Module):
    """N expert SwiGLU FFNs (``switch_mlp``) behind a per-layer router (``gate``), top-k run."""

    def __init__(self, args: TrunkArgs, num_experts: int, top_k: int, log: _Log):
        super().__init__()
        self.top_k = top_k
        self.gate = Gate(args.hidden_size, num_experts)
        self.switch_mlp = SwitchGLU(args.hidden_size, args.intermediate_size, num_experts)
        self._log = log

    def __call__(self, x: mx.array) -> mx.array:
        probs, inds, w = topk_gate(self.gate(x), self.top_k)  # (B,L,N) (B,L,k) (B,L,k)
        y = self.switch_mlp(x, inds)  # (B, L, k, D): only the k chosen FFNs are computed
        self._log.items.append((probs, inds))
        return (y * w[..., None].astype(y.dtype)).sum(axis=-2)


class LayerMoEEModel(Trunk):
    """A cherry ``Model`` (recurrence and MTP included) whose block FFNs are routed experts."""

    def __init__(self, args: MoEEArgs):
        super().__init__(args)
        m = args.moee
        self.num_experts, self.top_k = int(m["num_experts"]), int(m.get("top_k", 1))
        self._router = _Log()
        for layer in self.model.layers:
            layer.mlp = MoEMLP(args, self.num_experts, self.top_k, self._router)

    def route(self, inputs, cache=None, input_embeddings=None):
        """-> (h (B, L, D), [(probs, inds) per block call, in schedule order])"""
        self._router.items = []
        h = self.model(inputs, cache, input_embeddings)
        aux, self._router.items = self._router.items, []
        return h, aux

    def hidden(self, inputs, cache=None, input_embeddings=None) -> mx.array:
        return self.route(inputs, cache, input_embeddings)[0]


def moee_classes(config: Dict[str, Any]):
    """(Model class, args class) for a config with a ``moee`` key."""
    if config["moee"].get("granularity", "model") == "layer":
        return LayerMoEEModel, MoEEArgs
    return MoEEModel, MoEEArgs
