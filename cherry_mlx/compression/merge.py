"""Adjacent-layer merging (paper §3.3.1).

``W'_j = (1/r) * sum_{i in group j} W_i`` for *every* parameter of a block (attention and MLP
projections, both RMSNorm weights, biases if any). Groups are runs of adjacent layers: ``N/r`` equal
groups (``--to 6L`` or ``--factor 8``), balanced groups when ``--to K`` does not divide N (see
``balanced_groups``), or an explicit grouping (``--groups 3,3,2`` as sizes, or ``--groups
0-2,3-5,6-7`` as ranges).

The merged model is an ordinary Llama config with fewer layers, so plain ``mlx_lm.load`` reads it;
``merge_map`` (merged layer -> source layers of the *original* model, composed across repeated
merges) is recorded in config.json as provenance and ignored by mlx-lm.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from cherry_mlx.models.families import merged_layer_types
from cherry_mlx.models.loading import build_model

Groups = List[List[int]]


def parse_depth(to: str | int, what: str = "--to") -> int:
    """``"6L"``, ``"6l"``, ``"6"`` or ``6`` -> 6; anything else is a one-line error."""
    text = str(to).strip()
    m = re.fullmatch(r"(\d+)\s*[lL]?", text)
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"{what} {to!r} is not a layer count; write e.g. {what} 6L or {what} 6")
    return int(m.group(1))


def parse_groups(text: str, n_layers: int) -> Groups:
    """Explicit grouping: sizes ``"3,3,2"`` or ranges ``"0-2,3-5,6-7"`` (inclusive, single ``"8"``
    allowed among ranges). Groups must cover ``0..n_layers-1`` in order with adjacent layers only.
    """
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ValueError(f"--groups {text!r} is empty; write sizes (3,3,2) or ranges (0-2,3-7)")
    groups: Groups = []
    try:
        if any("-" in p for p in parts):
            for p in parts:
                a, _, b = p.partition("-")
                lo, hi = int(a), int(b or a)
                groups.append(list(range(lo, hi + 1)))
        else:
            start = 0
            for p in parts:
                size = int(p)
                groups.append(list(range(start, start + size)))
                start += size
    except ValueError:
        raise ValueError(
            f"--groups {text!r} is not sizes (3,3,2) or inclusive ranges (0-2,3-5,6-7)"
        ) from None
    check_groups(groups, n_layers, source=f"--groups {text!r}")
    return groups


def check_groups(groups: Groups, n_layers: int, source: str = "groups") -> None:
    flat = [i for g in groups for i in g]
    if any(len(g) == 0 for g in groups) or flat != list(range(n_layers)):
        raise ValueError(
            f"{source} must split layers 0..{n_layers - 1} into non-empty runs of adjacent layers "
            f"in order (got {groups})"
        )


def plan_groups(
    n_layers: int,
    to: Optional[str | int] = None,
    factor: Optional[int] = None,
    groups: Optional[str | Groups] = None,
) -> Groups:
    """Decide which adjacent layers are averaged together; exactly one of to/factor/groups."""
    given = [x is not None for x in (to, factor, groups)]
    if sum(given) != 1:
        raise ValueError("give exactly one of --to NL, --factor r or --groups (e.g. --to 6L)")
    if groups is not None:
        if isinstance(groups, str):
            return parse_groups(groups, n_layers)
        groups = [list(map(int, g)) for g in groups]
        check_groups(groups, n_layers)
        return groups
    if factor is not None:
        r = int(factor)
        if r < 1 or n_layers % r:
            raise ValueError(
                f"--factor {factor} does not divide the model's {n_layers} layers; pick a divisor "
                f"of {n_layers} or pass --groups (e.g. sizes 3,3,2)"
            )
        target = n_layers // r
    else:
        target = parse_depth(to)
        if target > n_layers:
            raise ValueError(
                f"--to {to} has more layers than the model's {n_layers}; merging only shrinks "
                f"depth (use `cherry-mlx upscale` to grow it)"
            )
    return balanced_groups(n_layers, target)


def balanced_groups(n_layers: int, target: int) -> Groups:
    """``target`` runs of adjacent layers whose sizes differ by at most one.

    Group j ends at ``round(j * N / K)`` (halves round up), so the larger groups are spread
    evenly through the stack instead of bunched at one end, the pattern is mirror-symmetric (up
    to exact halves), and the first and last layers (the least redundant ones in depth-pruning
    studies) stay alone whenever N < 1.5 K: 8 -> 6 gives sizes 1,2,1,1,2,1, 8 -> 5 gives
    2,1,2,1,2. When K divides N this is the plain N/K split.
    """
    bounds = [(2 * j * n_layers + target) // (2 * target) for j in range(target + 1)]
    return [list(range(bounds[j], bounds[j + 1])) for j in range(target)]


def describe_groups(groups: Groups) -> str:
    """One line for the log when the groups are uneven (empty when they are all one size)."""
    if len({len(g) for g in groups}) <= 1:
        return ""
    n = sum(len(g) for g in groups)
    sizes = ",".join(str(len(g)) for g in groups)
    ranges = ",".join(f"{g[0]}-{g[-1]}" if len(g) > 1 else str(g[0]) for g in groups)
    return (
        f"{n} layers do not split evenly into {len(groups)}: merging balanced adjacent groups "
        f"of sizes {sizes} (layers {ranges}); pass --groups to choose others"
    )


def _check_mergeable(config: Dict[str, Any], weights: Dict[str, mx.array]) -> None:
    if config.get("recurrence"):
        raise ValueError(
            "this model already has a recurrent core; merge the plain (non-looped) model, "
            "then unroll with --loops"
        )
    if config.get("quantization") or any(k.endswith(".scales") for k in weights):
        raise ValueError(
            "cannot average quantised weights; merge the full-precision model, then quantise"
        )


def average_layers(layers: Sequence[nn.Module]) -> Dict[str, mx.array]:
    """Mean of each parameter over ``layers`` (accumulated in float32, cast back)."""
    flats = [dict(tree_flatten(layer.parameters())) for layer in layers]
    out = {}
    for name, first in flats[0].items():
        acc = sum(f[name].astype(mx.float32) for f in flats)  # same shape as the parameter
        out[name] = (acc / len(flats)).astype(first.dtype)
    return out


def merge_model(
    model: nn.Module, config: Dict[str, Any], groups: Groups
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Return a new model whose layer j is the average of ``groups[j]``; non-layer weights
    (embedding, final norm, LM head, MTP heads) are shared with the source model."""
    weights = dict(tree_flatten(model.parameters()))
    _check_mergeable(config, weights)
    n = len(model.layers)
    check_groups(groups, n)
    new_cfg = dict(config)
    new_cfg["num_hidden_layers"] = len(groups)
    new_cfg = merged_layer_types(new_cfg, groups)  # a group is global if any member is
    new_cfg.pop("recurrence", None)
    old_map = config.get("merge_map") or [[i] for i in range(n)]
    new_cfg["merge_map"] = [sorted(i for j in g for i in old_map[j]) for g in groups]

    merged = build_model(new_cfg)
    new_weights = [(k, v) for k, v in weights.items() if not k.startswith("model.layers.")]
    for j, g in enumerate(groups):
        avg = average_layers([model.layers[i] for i in g])
        new_weights += [(f"model.layers.{j}.{k}", v) for k, v in avg.items()]
    merged.load_weights(new_weights, strict=True)  # every parameter accounted for
    merged.model.checkpoint = getattr(model.model, "checkpoint", False)
    return merged, new_cfg
