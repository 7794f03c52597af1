"""The protocol of a ``repro`` stage and the registry that finds them.

A stage is one module in ``cherry_mlx/pipelines/stages/`` that defines ``STAGE = Stage(...)``,
named after the module. The runner, ``--only``/``--redo`` and the report read everything about a
stage from that object (its place in the run, its heading, how to run it, its verdict rows, its
table and its plot), so adding a stage is adding one file and touching no other.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Sequence, Tuple

Result = Dict[str, Any]  # a stage's JSON: results/NAME.json
PlotData = Tuple[List[str], List[List[float]], str]  # bar labels, values per bar, y-axis label

PACKAGE = "cherry_mlx.pipelines.stages"


@dataclass(frozen=True)
class Stage:
    """One experiment of ``repro``: everything the runner and the report know about it."""

    name: str  # the module's name: results/NAME.json, --only NAME, NAME.png
    order: int  # place in a full run (ascending); stages are independent, this is for reading
    title: str  # report heading and plot title
    run: Callable[[Any], Result]  # Context -> result JSON (ctx.budget, ctx.cfg.knobs(name))
    rows: Callable[[Result], List[Dict[str, Any]]]  # claim rows (verdict.claim_row) of a result
    section: Callable[[Result], List[str]]  # markdown lines under the heading: the raw numbers
    plot: Callable[[Result], PlotData]  # the bar chart of the quantity the main claim is about
    # budget knobs of this stage alone: name -> value per budget ({"tiny": 3, "cpu": 60, ...});
    # `--set NAME=V` overrides them like the shared Budget fields, results record them
    knobs: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    # definition fixes this stage's code applies: key -> which numbers an older result (one
    # whose JSON lacks the key in ``fixes``) measured the old way; the report lists them
    fixes: Dict[str, str] = field(default_factory=dict)


def names() -> Tuple[str, ...]:
    """Stage names from the stage modules' file names, without importing them (no MLX: the
    settings are checked before any work and ``--help`` stays instant)."""
    pkg = importlib.import_module(PACKAGE)
    return tuple(sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)
                        if not m.name.startswith("_")))  # fmt: skip


def stages(only: Sequence[str] = ()) -> Tuple[Stage, ...]:
    """The registered stages in run order (``only``: those, in the order given)."""
    found = {}
    for name in names():
        mod = importlib.import_module(f"{PACKAGE}.{name}")
        stage = getattr(mod, "STAGE", None)
        if not isinstance(stage, Stage) or stage.name != name:
            raise TypeError(f"{mod.__file__}: must define STAGE = Stage(name={name!r}, ...)")
        found[name] = stage
    if only:
        return tuple(found[n] for n in only)
    return tuple(sorted(found.values(), key=lambda s: (s.order, s.name)))


def get(name: str) -> Stage:
    (stage,) = stages([name])
    return stage
