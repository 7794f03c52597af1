"""The layer-pruning baselines of ``compress --method``: drop whole layers instead of averaging.

The paper compares averaging adjacent layers with nothing; the two standard ways of removing depth
from a pretrained model are

- ``prune-bi`` (ShortGPT, Men et al. 2024): drop the layers with the lowest block influence
  ``BI_l = 1 - E[cos(x_l, x_{l+1})]``, wherever they are;
- ``prune-angular`` (Gromov et al. 2024): drop the contiguous block of ``n`` layers ``[l*, l*+n)``
  whose input and output are closest in angle, ``l* = argmin_l d(x_l, x_{l+n})``; ties go to the
  deepest block (Gromov et al. find the deep layers the most redundant).

Both are measured on hidden states of calibration batches drawn from the training data, never
the held-out batches the pruned model is then scored on (``redundancy.py``); the angular distance
at each sequence's last token, as Gromov et al. measure it. The kept layers stay in order,
copied as new arrays; embedding, final norm and LM head are unchanged, so the pruned model is an
ordinary Llama config with fewer layers, healed by the same SGT stages as an averaged one.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import mlx.core as mx
import mlx.nn as nn

from cherry_mlx.compression.config import METHODS
from cherry_mlx.compression.merge import Groups, merge_model
from cherry_mlx.compression.redundancy import analyze_layers
from cherry_mlx.compression.stack import restacked_weights
from cherry_mlx.models.families import merged_layer_types
from cherry_mlx.models.loading import build_model


def dropped_layers(
    block_influence: Sequence[float], angular: Sequence[float], n_drop: int, method: str
) -> List[int]:
    """Indices of the ``n_drop`` layers ``method`` removes, ascending.

    ``block_influence``: BI per layer (L,); ``angular``: d(x_l, x_{l+n_drop}) for l = 0..L-n_drop.
    """
    depth = len(block_influence)
    if not 0 < n_drop < depth:
        raise ValueError(f"cannot drop {n_drop} of {depth} layers: keep between 1 and {depth - 1}")
    if method == "prune-bi":
        # stable sort: equal BI drops the shallower layer first, as ShortGPT's ranking does
        order = sorted(range(depth), key=lambda i: block_influence[i])
        return sorted(order[:n_drop])
    if method == "prune-angular":
        if len(angular) != depth - n_drop + 1:
            raise ValueError(f"need d(x_l, x_l+{n_drop}) for {depth - n_drop + 1} starts")
        best = min(range(len(angular)), key=lambda i: (angular[i], -i))  # ties: deepest
        return list(range(best, best + n_drop))
    raise ValueError(f"--method {method!r}: pruning methods are prune-bi and prune-angular")


def prune_plan(model, batches, n_keep: int, method: str, max_batches: int = 8) -> List[int]:
    """Layers kept when ``method`` prunes ``model`` to ``n_keep`` layers (measured on
    ``batches``, calibration data)."""
    depth = len(model.layers)
    n_drop = depth - n_keep
    report = analyze_layers(model, batches, r=max(n_drop, 1), max_batches=max_batches,
                            angular_at="last")  # fmt: skip
    drop = set(dropped_layers(report.block_influence, report.angular, n_drop, method))
    return [i for i in range(depth) if i not in drop]


def prune_model(
    model: nn.Module, config: Dict[str, Any], keep: Sequence[int]
) -> Tuple[nn.Module, Dict[str, Any]]:
    """A new model made of ``model``'s layers ``keep`` (in order)."""
    if config.get("recurrence"):
        raise ValueError("cannot prune a looped model; prune its untied source instead")
    if config.get("quantization"):
        raise ValueError("cannot prune quantised weights; prune the full-precision model")
    n = len(model.layers)
    if not keep or sorted(set(keep)) != list(keep) or keep[-1] >= n:
        raise ValueError(f"kept layers {list(keep)} must be ascending indices below {n}")
    new_cfg = dict(config)
    new_cfg["num_hidden_layers"] = len(keep)
    new_cfg = merged_layer_types(new_cfg, [[i] for i in keep])
    old_map = config.get("merge_map") or [[i] for i in range(n)]
    new_cfg["merge_map"] = [list(old_map[i]) for i in keep]
    pruned = build_model(new_cfg)
    pruned.load_weights(restacked_weights(model, keep), strict=True)
    pruned.model.checkpoint = getattr(model.model, "checkpoint", False)
    mx.eval(pruned.parameters())
    return pruned, new_cfg


def shrink(
    model: nn.Module, config: Dict[str, Any], groups: Groups, method: str, batches
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Reduce ``model`` to ``len(groups)`` layers with ``method`` (one of ``METHODS``):
    ``average`` merges each group (the paper), the pruning methods drop layers instead."""
    if method not in METHODS:
        raise ValueError(f"--method {method!r}: use one of {', '.join(METHODS)}")
    if method == "average":
        return merge_model(model, config, groups)
    if not batches:
        raise ValueError(f"--method {method} measures hidden states: no calibration data")
    return prune_model(model, config, prune_plan(model, batches, len(groups), method))
