"""Depth up-scaling (DUS, SOLAR [Kim et al. 2024]): the inverse of merging.

Two copies A and B of an N-layer stack are stacked to a target depth M (N < M <= 2N); they overlap
by ``k = 2N - M`` layers, and ``overlap`` says what happens to the overlap:

- ``drop`` (SOLAR): the seam is cut, ``ceil(k/2)`` layers from the top of A and ``floor(k/2)``
  from the bottom of B (SOLAR's 32 -> 48: A = 0..23, B = 8..31), so the first and last layers of
  the original stay at the ends and the middle band appears twice;
- ``duplicate``: A is kept whole and the top ``M - N`` layers are stacked again on top
  (B = k..N-1): no original layer is dropped, the upper band is duplicated.

Either way every new layer is an independent (untied) copy that training may move apart, and the
result is an ordinary Llama config (``upscale_map``: source layer of each new layer).
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import mlx.nn as nn
from mlx.utils import tree_flatten

from cherry_mlx.compression.heal import source_name
from cherry_mlx.compression.merge import parse_depth
from cherry_mlx.compression.stack import restacked_weights
from cherry_mlx.models.families import merged_layer_types
from cherry_mlx.models.loading import build_model, load_model, resolve, save_model
from cherry_mlx.models.outputs import check_output
from cherry_mlx.models.runs import RUNS_DIR

OVERLAP_MODES = ("drop", "duplicate")


def plan_dus(n_layers: int, to: str | int, overlap: str = "drop") -> List[int]:
    """Source layer index for each layer of the up-scaled stack."""
    if overlap not in OVERLAP_MODES:
        raise ValueError(f"--overlap {overlap!r}: use one of {OVERLAP_MODES}")
    target = parse_depth(to)
    if not n_layers < target <= 2 * n_layers:
        raise ValueError(
            f"--to {to}: DUS of a {n_layers}-layer model needs {n_layers} < target <= "
            f"{2 * n_layers} (two copies at most); up-scale twice for more, or merge to shrink"
        )
    k = 2 * n_layers - target
    if overlap == "drop":
        top = list(range(n_layers - (k + 1) // 2))
        bottom = list(range(k // 2, n_layers))
    else:
        top = list(range(n_layers))
        bottom = list(range(k, n_layers))
    plan = top + bottom
    assert len(plan) == target
    return plan


def upscale_model(
    model: nn.Module, config: Dict[str, Any], to: str | int, overlap: str = "drop"
) -> Tuple[nn.Module, Dict[str, Any]]:
    """New model whose layer j is a copy of source layer ``plan[j]``; other weights shared."""
    if config.get("recurrence"):
        raise ValueError("this model has a recurrent core: up-scale the plain model, loop it after")
    plan = plan_dus(len(model.layers), to, overlap)
    flat = dict(tree_flatten(model.parameters()))
    if config.get("quantization") or any(k.endswith(".scales") for k in flat):
        raise ValueError("cannot up-scale quantised weights; up-scale in full precision first")
    weights = restacked_weights(model, plan)
    cfg = dict(config)
    cfg["num_hidden_layers"] = len(plan)
    cfg = merged_layer_types(cfg, [[s] for s in plan])
    cfg["upscale_map"] = plan
    if config.get("merge_map"):  # provenance in terms of the original layers
        cfg["merge_map"] = [config["merge_map"][s] for s in plan]
    new = build_model(cfg)
    new.load_weights(weights, strict=True)
    return new, cfg


def upscale(model: str, to: str | int, overlap: str = "drop", out=None, log=print, force=False):
    """``cherry-mlx upscale``: load, DUS, save (with tokenizer files); returns the output dir.
    ``force``: write into a non-empty ``out`` (``outputs.check_output``)."""
    from pathlib import Path

    src = resolve(model)
    if out:
        check_output(out, [src], force)
    source, cfg = load_model(src)
    new, ncfg = upscale_model(source, cfg, to, overlap)
    out = Path(out) if out else RUNS_DIR / f"{source_name(src)}-dus{len(new.layers)}L"
    check_output(out, [src], force)
    save_model(new, out, ncfg, tokenizer_dir=src)
    log(
        f"{len(source.layers)} -> {len(new.layers)} layers ({overlap}); layer sources "
        f"{ncfg['upscale_map']}; saved to {out}"
    )
    return out


def upscale_command(cfg, log=print):
    """``cherry-mlx upscale`` with an ``UpscaleConfig``."""
    return upscale(cfg.model, cfg.to, cfg.overlap, cfg.out, log=log, force=cfg.force)
