"""Build a MoEE from compressed expert models (``cherry-mlx fuse``'s first half).

The experts keep their weights bit for bit (model granularity) or donate them (layer granularity:
attention, norms and embeddings are averaged as Branch-Train-MiX does, each expert's FFN becomes
one routed FFN per block). Only the gates, shared embedding/head (initialised as the experts'
mean) and MTP heads are new.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from cherry_mlx.models.loading import build_model, load_model, model_config, resolve
from cherry_mlx.models.moee import GRANULARITIES

# Tokenizer files whose content must agree between experts (same vocabulary, same ids).
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
# Config fields that must agree for layer granularity (one shared trunk shape).
_SHAPE_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "recurrence",
    "tie_word_embeddings",
)


def tokenizer_fingerprint(path: Path) -> Optional[str]:
    """sha256 over the tokenizer files of a model directory, or None when it has none."""
    h, found = hashlib.sha256(), False
    for name in _TOKENIZER_FILES:
        f = Path(path) / name
        if f.is_file():
            h.update(name.encode() + f.read_bytes())
            found = True
    return h.hexdigest() if found else None


EXPERTS_FIX = (
    "experts",
    "fuse models compressed from one base model so they share its tokenizer",
)


def check_same_tokenizer(
    paths: Sequence[Path], configs: Sequence[Dict[str, Any]], why: Tuple[str, str] = EXPERTS_FIX
) -> None:
    """Models compared or mixed token by token must share one tokenizer (the MoEE gate mixes
    predictions over one vocabulary; distillation and eval's baseline compare them on the same
    token ids). ``why`` = (what the models are, the fix) for the error line."""
    vocab = {c.get("vocab_size") for c in configs}
    prints = [tokenizer_fingerprint(p) for p in paths]
    known = {p for p in prints if p is not None}
    if len(vocab) != 1 or len(known) > 1:
        listing = ", ".join(f"{p} (vocab {c.get('vocab_size')})" for p, c in zip(paths, configs))
        raise ValueError(f"{why[0]} use different tokenizers: {listing}; {why[1]}")


def load_experts(names: Sequence[str]) -> Tuple[List[nn.Module], List[Dict[str, Any]], List[Path]]:
    """Load expert models (preset, directory or run) and check that they can be fused."""
    if len(names) < 1:
        raise ValueError("fuse needs at least one expert model (two or more for a mixture)")
    paths = [resolve(n) for n in names]
    loaded = [load_model(p) for p in paths]
    models, configs = [m for m, _ in loaded], [c for _, c in loaded]
    for m, c, p in zip(models, configs, paths):
        if c.get("moee"):
            raise ValueError(f"{p} is already a MoEE; fuse its experts directly")
        if "quantization" in c:
            raise ValueError(f"{p} is quantised; fuse full-precision experts and quantise after")
    check_same_tokenizer(paths, configs)
    return models, configs, paths


def _expert_config(model: nn.Module, config: Dict[str, Any]) -> Dict[str, Any]:
    cfg = model_config(model, config)
    for key in ("mtp", "model_file", "moee"):
        cfg.pop(key, None)
    return cfg


def assemble(
    experts: Sequence[nn.Module],
    configs: Sequence[Dict[str, Any]],
    granularity: str = "model",
    top_k: int = 1,
    shared: bool = True,
    mtp_heads: int = 0,
    sources: Sequence[str] = (),
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Fused model and its config.json. Experts are ``cherry_mlx.models.Model`` instances."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"--granularity {granularity!r} is not one of {', '.join(GRANULARITIES)}")
    n = len(experts)
    if not 1 <= top_k <= n:
        raise ValueError(f"--top-k {top_k} must be between 1 and the number of experts ({n})")
    ecfgs = [_expert_config(m, c) for m, c in zip(experts, configs)]
    base = dict(ecfgs[0])
    moee = {"granularity": granularity, "num_experts": n, "top_k": int(top_k)}
    if sources:
        moee["sources"] = [str(s) for s in sources]
    if granularity == "model":
        for key in ("recurrence", "merge_map"):
            base.pop(key, None)  # describe one expert's trunk: kept per expert, not at the top
        base["num_hidden_layers"] = 0
        base["tie_word_embeddings"] = all(c.get("tie_word_embeddings", False) for c in ecfgs)
        moee.update(shared_embeddings=bool(shared), experts=ecfgs)
    else:
        _check_same_shape(ecfgs)
        moee["shared_embeddings"] = True
    if mtp_heads:
        if granularity == "model" and not shared:
            raise ValueError("MTP heads need the shared embedding and LM head: add --shared")
        base["mtp"] = {"num_heads": int(mtp_heads)}
    base["moee"] = moee
    model = build_model(base)
    mx.eval(model.parameters())  # fresh gates / MTP heads, then overwrite the expert weights
    if granularity == "model":
        _fill_model_granularity(model, experts, shared)
    else:
        _fill_layer_granularity(model, experts)
    return model, base


def _check_same_shape(cfgs: Sequence[Dict[str, Any]]) -> None:
    for key in _SHAPE_KEYS:
        vals = [c.get(key) for c in cfgs]
        if any(v != vals[0] for v in vals):
            raise ValueError(
                f"--granularity layer needs experts of one shape, but {key} differs: {vals}; "
                "use --granularity model for experts of different depth or loop count"
            )


def _mean(arrays: Sequence[mx.array]) -> mx.array:
    return mx.mean(mx.stack(list(arrays)), axis=0)


def _fill_model_granularity(model, experts, shared: bool) -> None:
    for dst, src in zip(model.experts, experts):
        weights = dict(tree_flatten(src.parameters()))
        own = set(k for k, _ in tree_flatten(dst.parameters()))
        dst.update(tree_unflatten([(k, v) for k, v in weights.items() if k in own]))
    if shared:  # shared embedding / head start as the experts' mean (BTX-style averaging)
        model.model.embed_tokens.weight = _mean([e.model.embed_tokens.weight for e in experts])
        if "lm_head" in model:  # an untied expert's head, else its (tied) embedding
            heads = [
                e.lm_head.weight if "lm_head" in e else e.model.embed_tokens.weight for e in experts
            ]
            model.lm_head.weight = _mean(heads)
    mx.eval(model.parameters())


def _fill_layer_granularity(model, experts) -> None:
    flat = [dict(tree_flatten(e.parameters())) for e in experts]
    new = []
    for key in flat[0]:
        if ".mlp." in key:
            continue
        new.append((key, _mean([f[key] for f in flat])))
    for i, layer in enumerate(model.model.layers):
        sw = layer.mlp.switch_mlp
        for name in ("gate_proj", "up_proj", "down_proj"):
            w = mx.stack([f[f"model.layers.{i}.mlp.{name}.weight"] for f in flat])  # (N, out, in)
            if w.shape != getattr(sw, name).weight.shape:
                raise ValueError(
                    f"expert FFN {name} has shape {w.shape[1:]}, expected "
                    f"{getattr(sw, name).weight.shape[1:]}"
                )
            new.append((f"model.layers.{i}.mlp.switch_mlp.{name}.weight", w))
    model.update(tree_unflatten(new))
    mx.eval(model.parameters())


def set_trainable(model: nn.Module, experts: bool = False) -> List[str]:
    """Freeze the experts; train the gate(s), MTP heads and shared head (or all with ``experts``).

    Returns the trainable top-level names, for the log.
    """
    if experts:
        model.unfreeze()
        return ["all"]
    model.freeze()
    names = []
    if getattr(model, "gate", None) is not None:  # model granularity
        model.gate.unfreeze()
        names.append("gate")
    for i, layer in enumerate(getattr(getattr(model, "model", None), "layers", None) or []):
        if hasattr(layer.mlp, "gate"):  # layer granularity
            layer.mlp.gate.unfreeze()
            names.append(f"model.layers.{i}.mlp.gate")
    if getattr(model, "mtp", None) is not None:
        model.mtp.unfreeze()
        names.append("mtp")
    return names
