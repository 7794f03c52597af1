"""Recurrent unrolling of a (merged) model: prelude P, core C looped n times, coda Q.

The backbone (``cherry_mlx.models.llama``) does the looping:
``recurrence = {"prelude": P, "core": C, "coda": Q, "loops": n}`` in config.json makes
``LlamaModel`` call the *same* core modules n times (schedule ``0..P-1, (P..P+C-1) * n,
P+C..N-1``), so the core's arrays exist once and their gradient is the sum over loops; generation
keeps one KV cache per (layer, loop). This module only plans the split, rebuilds the model around
the same arrays and offers the explicitly unrolled (untied) twin used as the reference in tests
and benchmarks.

Defaults follow the paper's 6Lx8 = 34 effective layers: P = Q = 1, C = N - 2. Other splits come
from ``prelude``/``coda`` or a whole ``layout`` "P,C,Q": the paper's 24Lx2 = 40 effective layers
need 24 = P + C + Q and 40 = P + 2C + Q, so C = 16, e.g. ``4,16,4``. Without looping
(``loops=1``) nothing repeats, so there is no core to leave and every layer counts as one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import mlx.nn as nn
from mlx.utils import tree_flatten

from cherry_mlx.compression.config import parse_layout
from cherry_mlx.compression.stack import restacked_weights
from cherry_mlx.models.families import merged_layer_types
from cherry_mlx.models.loading import build_model


@dataclass(frozen=True)
class Recurrence:
    """Split of N unique layers into prelude/core/coda and the number of core loops."""

    prelude: int
    core: int
    coda: int
    loops: int

    @property
    def unique(self) -> int:
        return self.prelude + self.core + self.coda

    @property
    def effective_depth(self) -> int:
        return self.prelude + self.loops * self.core + self.coda

    def as_dict(self) -> Dict[str, int]:
        return {"prelude": self.prelude, "core": self.core, "coda": self.coda, "loops": self.loops}

    def label(self) -> str:
        return f"{self.unique}Lx{self.loops} (P{self.prelude} C{self.core} Q{self.coda})"


def plan_recurrence(
    n_unique: int, loops: int, prelude: int = 1, coda: int = 1, layout: Optional[str] = None
) -> Recurrence:
    """Validate and build the split; the core is whatever prelude and coda leave.

    ``layout`` ("P,C,Q") replaces prelude/coda and must add up to ``n_unique``. With ``loops=1``
    nothing repeats, so no core is required: the result is the plain stack P0 C=N Q0.
    """
    loops = int(loops)
    if loops < 1:
        raise ValueError(f"--loops {loops} must be >= 1 (1 = no recurrence)")
    if layout is not None:
        prelude, core, coda = parse_layout(layout)
        if prelude + core + coda != n_unique:
            raise ValueError(
                f"--layout {layout} adds up to {prelude + core + coda} layers but the model has "
                f"{n_unique} unique layers; make P + C + Q = {n_unique}"
            )
    prelude, coda = int(prelude), int(coda)
    if prelude < 0 or coda < 0:
        raise ValueError(f"--prelude {prelude} / --coda {coda} must be >= 0")
    if loops == 1:
        return Recurrence(0, n_unique, 0, 1)
    core = n_unique - prelude - coda
    if core < 1:
        raise ValueError(
            f"--prelude {prelude} + --coda {coda} leave no core layer out of {n_unique} unique "
            f"layers; lower them (e.g. --layout 0,{n_unique},0) or keep more layers with --to"
        )
    return Recurrence(prelude, core, coda, loops)


def current_recurrence(config: Dict[str, Any]) -> Recurrence:
    """The split a config describes (a plain model is P0 C=N Q0 x1)."""
    n = int(config["num_hidden_layers"])
    r = config.get("recurrence")
    if not r:
        return Recurrence(0, n, 0, 1)
    return Recurrence(int(r["prelude"]), int(r["core"]), int(r["coda"]), int(r["loops"]))


def unroll(
    model: nn.Module,
    config: Dict[str, Any],
    loops: int,
    prelude: int = 1,
    coda: int = 1,
    layout: Optional[str] = None,
) -> Tuple[nn.Module, Dict[str, Any]]:
    """The same unique layers run as P + loops*C + Q blocks. Shares the source's arrays (no copy).

    ``loops=1`` gives a plain Llama config (identical computation, loads in plain mlx-lm). A model
    that is already recurrent is re-planned from its unique layers.
    """
    rec = plan_recurrence(int(config["num_hidden_layers"]), loops, prelude, coda, layout)
    # the unique layers stay, each with its attention type, on every loop
    cfg = merged_layer_types(config, [[i] for i in range(rec.unique)])
    if rec.loops == 1:
        cfg.pop("recurrence", None)
    else:
        cfg["recurrence"] = rec.as_dict()
    new = build_model(cfg)
    new.load_weights(list(tree_flatten(model.parameters())), strict=True)
    new.model.checkpoint = getattr(model.model, "checkpoint", False)
    return new, cfg


def untie(model: nn.Module, config: Dict[str, Any]) -> Tuple[nn.Module, Dict[str, Any]]:
    """Explicitly unrolled twin: a plain Llama with one *separate* layer per schedule step, each
    initialised to the unique layer it replaces. Same function, untied parameters."""
    schedule = list(model.model.schedule)
    cfg = dict(config)
    cfg.pop("recurrence", None)
    cfg = merged_layer_types(cfg, [[i] for i in schedule])
    cfg["num_hidden_layers"] = len(schedule)
    weights = restacked_weights(model, schedule)
    twin = build_model(cfg)
    twin.load_weights(weights, strict=True)
    return twin, cfg


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the distinct parameter arrays a model holds (what ``save`` writes)."""
    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))
