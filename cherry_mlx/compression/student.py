"""Building the compressed model (the student) from a teacher cache's statistics.

Three choices, each one flag of ``compress``:

- ``grouping``: ``uniform`` (the paper's equal runs of adjacent layers) or ``similarity``
  (``grouping.similarity_groups``: merge where the source's residual stream turns least);
- ``method``: ``average`` (each group averaged, the paper), ``prune-bi`` (keep the layers of
  highest block influence, ShortGPT) or ``prune-loop`` (keep the first and last layers and the
  most influential ones between them: a pruned model whose middle is then looped);
- ``init`` for ``average``: ``average`` (the paper) or ``best`` (the group's most influential
  member, copied, instead of the mean of members that disagree).

Every kept or merged layer j "stands for" a run of source layers ``groups[j]`` (for pruning: the
kept layer and the dropped ones up to the next kept layer); local healing trains it on that run.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from cherry_mlx.compression.grouping import (
    Groups,
    best_members,
    block_influence,
    similarity_groups,
    stream_distances,
)
from cherry_mlx.compression.local_heal import calibration_states, group_units, loop_units
from cherry_mlx.compression.merge import balanced_groups, merge_model
from cherry_mlx.compression.prune import prune_model
from cherry_mlx.compression.recurrent import plan_recurrence, unroll

GROUPINGS = ("uniform", "similarity")
STUDENT_METHODS = ("average", "prune-bi", "prune-loop")
INITS = ("average", "best")


def runs_of_kept(keep: Sequence[int], n: int) -> Groups:
    """The source run each kept layer stands for: itself and the dropped layers after it (the
    first run also takes any dropped layers before it)."""
    keep = sorted(keep)
    bounds = [0] + list(keep[1:]) + [n]
    return [list(range(bounds[j], bounds[j + 1])) for j in range(len(keep))]


def choose_kept(influence: Sequence[float], target: int, method: str) -> List[int]:
    """Layers kept by ``prune-bi`` (highest influence) or ``prune-loop`` (first, last and the
    highest influence between them)."""
    n = len(influence)
    if not 1 <= target < n:
        raise ValueError(f"cannot keep {target} of {n} layers: keep 1..{n - 1}")
    if method == "prune-bi":
        return sorted(sorted(range(n), key=lambda i: (-influence[i], i))[:target])
    if target < 3:
        raise ValueError("prune-loop keeps the first and last layers and a core: --to 3L or more")
    mid = sorted(range(1, n - 1), key=lambda i: (-influence[i], i))[: target - 2]
    return [0] + sorted(mid) + [n - 1]


def build_student(
    source, source_cfg: Dict[str, Any], cache, target: int, grouping: str = "uniform",
    method: str = "average", init: str = "average", loops: int = 1, prelude: int = 1,
    coda: int = 1, calib_rows: Sequence[int] = range(32),
) -> Tuple[Any, Dict[str, Any], Groups, list, Dict[str, Any]]:  # fmt: skip
    """(model, config, groups, local-healing units, info) of the compressed source."""
    for name, val, allowed in (
        ("--grouping", grouping, GROUPINGS),
        ("--method", method, STUDENT_METHODS),
        ("--init", init, INITS),
    ):
        if val not in allowed:
            raise ValueError(f"{name} {val!r}: use one of {', '.join(allowed)}")  # fmt: skip
    n = len(source.layers)
    calib = [r for r in calib_rows if r < cache.rows]
    states, mask = calibration_states(cache, calib)
    d = stream_distances(states, mask)
    influence = block_influence(d)
    info: Dict[str, Any] = {"block_influence": influence}
    if method == "average":
        groups = (
            balanced_groups(n, target) if grouping == "uniform" else similarity_groups(d, target)
        )
        if init == "average":
            model, cfg = merge_model(source, source_cfg, groups)
        else:
            keep = best_members(groups, influence)
            model, cfg = prune_model(source, source_cfg, keep)
            cfg["merge_map"] = [list(g) for g in groups]
            info["kept"] = keep
    else:
        keep = choose_kept(influence, target, method)
        groups = runs_of_kept(keep, n)
        model, cfg = prune_model(source, source_cfg, keep)
        info["kept"] = keep
    info["groups"] = groups
    rec = plan_recurrence(len(groups), loops, prelude, coda)
    if rec.loops > 1:
        model, cfg = unroll(model, cfg, rec.loops, rec.prelude, rec.coda)
        units = loop_units(groups, rec.prelude, rec.core, rec.loops)
    else:
        units = group_units(groups)
    return model, cfg, groups, units, info
