"""Local healing: each merged group (or loop iteration) learns to reproduce the source layers it
replaces, from cached hidden states (LLM-Streamline, CoMe's layer-wise distillation).

A merged layer j standing for source layers [a, b) is trained on ``h_a -> h_b``: its input is
the *source's* residual stream entering block a and its target the stream entering block b, both
read from a teacher cache (``--hidden-layers``). Every unit is teacher-forced, so units do not
wait on each other and one step costs one block forward/backward per unit, no embedding or LM
head: on a CPU this is tens of times cheaper per token than end-to-end distillation, and it puts
each merged layer close to its job before any end-to-end step.

The loss per unit is the relative error ``Σ‖f(h_a) - h_b‖² / Σ‖h_b - h_a‖²``: 1 means "no
better than skipping the run", 0 a perfect copy, so units of different sizes weigh the same.

A looped core is a unit too: iteration i of the core (its C layers called in order) stands for
its own source segment, and all iterations share the same weights, so the tied core learns the
step that best serves every segment (``loop_units``).
"""

from __future__ import annotations

import time
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx_lm.models.base import create_attention_mask

from cherry_mlx.compression.merge import balanced_groups
from cherry_mlx.training.step import lr_schedule

Unit = Tuple[Tuple[int, ...], int, int]  # (indices into ``blocks``, source start a, end b)


class Blocks(nn.Module):
    """The trainable blocks (the model's own layer objects: training updates the model)."""

    def __init__(self, layers: Sequence[nn.Module]):
        super().__init__()
        self.layers = list(layers)


def relative_error(pred: mx.array, target: mx.array, inp: mx.array) -> mx.array:
    """Σ‖pred - target‖² / Σ‖target - inp‖² in float32. (B, T, D) x 3 -> scalar"""
    num = mx.square(pred.astype(mx.float32) - target).sum()
    return num / mx.maximum(mx.square(target - inp).sum(), 1e-12)


def run_unit(blocks: Blocks, calls: Sequence[int], h: mx.array, masks=None) -> mx.array:
    """``masks``: h -> one mask per layer (the backbone's ``layer_masks``: sliding layers get
    their window); default causal for every layer."""
    per_layer = masks(h) if masks is not None else None
    mask = create_attention_mask(h, None)
    for i in calls:
        h = blocks.layers[i](h, per_layer[i] if per_layer is not None else mask)
    return h


def group_units(groups: Sequence[Sequence[int]]) -> List[Unit]:
    """One unit per merged/kept layer j: block j stands for source layers [g[0], g[-1] + 1)."""
    return [((j,), g[0], g[-1] + 1) for j, g in enumerate(groups)]


def loop_units(groups: Sequence[Sequence[int]], prelude: int, core: int, loops: int) -> List[Unit]:
    """Units of a looped model whose unique layer j stood for source run ``groups[j]``: prelude
    and coda layers keep their runs; loop iteration i of the core stands for the i-th of
    ``loops`` balanced pieces of the source layers the core's runs covered."""
    n = len(groups)
    if not 0 < prelude + core <= n:
        raise ValueError(f"prelude {prelude} + core {core} do not fit {n} unique layers")
    units: List[Unit] = [((j,), groups[j][0], groups[j][-1] + 1) for j in range(prelude)]
    lo, hi = groups[prelude][0], groups[prelude + core - 1][-1] + 1
    if hi - lo < loops:
        raise ValueError(f"{loops} loops need at least {loops} source layers in the core's "
                         f"runs, have {hi - lo}")  # fmt: skip
    core_idx = tuple(range(prelude, prelude + core))
    for seg in balanced_groups(hi - lo, loops):
        units.append((core_idx, lo + seg[0], lo + seg[-1] + 1))
    units += [((j,), groups[j][0], groups[j][-1] + 1) for j in range(prelude + core, n)]
    return units


def fit_local(
    layers: Sequence[nn.Module],
    units: Sequence[Unit],
    cache,
    steps: int,
    lr: float = 3e-4,
    batch_size: int = 8,
    seed: int = 0,
    rows: Optional[Sequence[int]] = None,
    log: Callable[[str], None] = print,
    masks: Optional[Callable] = None,
) -> List[Dict[str, float]]:
    """Train ``layers`` so each unit maps the cached source state ``h_a`` to ``h_b``; returns
    the per-step history (mean relative error over units)."""
    if steps <= 0:
        return []
    need = sorted({u[1] for u in units} | {u[2] for u in units})
    blocks = Blocks(layers)
    opt = optim.AdamW(learning_rate=lr_schedule(lr, steps, max(steps // 20, 1), 0.1),
                      weight_decay=0.0)  # fmt: skip

    def loss_fn(model, hs):
        errs = [relative_error(run_unit(model, calls, hs[a], masks), hs[b], hs[a])
                for calls, a, b in units]  # fmt: skip
        return mx.stack(errs).mean()

    value_and_grad = nn.value_and_grad(blocks, loss_fn)
    state = [blocks.state, opt.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(hs):
        loss, grads = value_and_grad(blocks, hs)
        opt.update(blocks, grads)
        return loss

    keys = [f"hidden-{i}" for i in need]
    it = cache.batches(batch_size, seed=seed, epochs=None, keys=keys, rows=rows)
    history, t0 = [], time.perf_counter()
    for s in range(steps):
        b = next(it)
        hs = {i: mx.array(b[f"hidden-{i}"]).astype(mx.float32) for i in need}
        loss = step(hs)
        mx.eval(loss, state)
        if s % max(steps // 10, 1) == 0 or s == steps - 1:
            history.append({"step": s + 1, "rel_error": loss.item(),
                            "seconds": time.perf_counter() - t0})  # fmt: skip
            log(f"  local step {s + 1}/{steps}: relative error {loss.item():.4f}")
    return history


def unit_errors(layers, units: Sequence[Unit], cache, rows: Sequence[int]) -> List[float]:
    """Relative error of each unit on ``rows`` (no training)."""
    blocks = Blocks(layers)
    b = cache.row_batch(rows)
    out = []
    for calls, a, bnd in units:
        x = mx.array(b[f"hidden-{a}"]).astype(mx.float32)
        y = mx.array(b[f"hidden-{bnd}"]).astype(mx.float32)
        out.append(relative_error(run_unit(blocks, calls, x), y, x).item())
    return out


def calibration_states(cache, rows: Sequence[int]) -> Tuple[List[np.ndarray], np.ndarray]:
    """Cached states entering every block and after the last, (B, T, D) each, and the mask."""
    b = cache.row_batch(rows)
    n = max(cache.hidden_layers)
    if cache.hidden_layers != list(range(n + 1)):
        raise ValueError("similarity grouping needs every layer's hidden state: rebuild the "
                         "teacher cache with --hidden-layers all")  # fmt: skip
    mask = np.ones(b["inputs"].shape, bool)
    return [b[f"hidden-{i}"] for i in range(n + 1)], mask
