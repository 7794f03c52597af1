"""Re-stacking layers: the one weight operation behind untying a loop and depth up-scaling."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import mlx.core as mx
from mlx.utils import tree_flatten


def restacked_weights(model, plan: Sequence[int]) -> List[Tuple[str, mx.array]]:
    """Weights of a model whose layer j is a fresh copy of ``model``'s layer ``plan[j]``.

    Non-layer weights (embedding, final norm, LM head, heads) are carried over unchanged. Copies
    are new arrays, so the new layers train independently of each other and of the source.
    """
    flat = dict(tree_flatten(model.parameters()))
    weights = [(k, v) for k, v in flat.items() if not k.startswith("model.layers.")]
    for j, src in enumerate(plan):
        prefix = f"model.layers.{src}."
        weights += [
            (f"model.layers.{j}.{k[len(prefix) :]}", mx.array(v))
            for k, v in flat.items()
            if k.startswith(prefix)
        ]
    return weights
