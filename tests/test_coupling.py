"""γ̄ (Eq. 5) against a finite-difference directional derivative, and the Theorem-3 step check."""

import mlx.core as mx
import numpy as np
import pytest
from _wave_helpers import make_batch
from mlx.utils import tree_flatten, tree_map

from cherry_mlx.evaluation.coupling import measure_coupling, split_gradients, tree_dot
from cherry_mlx.evaluation.wave import split_losses
from cherry_mlx.models import build_model


def tiny_model(cfg):
    model = build_model(cfg)
    mx.eval(model.parameters())
    return model


def shifted(model, direction, eps):
    params = model.trainable_parameters()
    model.update(tree_map(lambda p, d: p + eps * d, params, direction))
    return params


def test_gamma_matches_finite_difference(tiny_config):
    model = tiny_model(tiny_config)
    batches = [make_batch(seed=3), make_batch(B=1, seed=4)]
    c = measure_coupling(model, batches, check=False)
    g_gt, _, l_gt, l_ng = split_gradients(model, batches)
    # Independent reference: central difference of L_nonGT along u = ∇L_GT (float32 forward),
    # d/dε L_nonGT(θ + εu) = <∇L_nonGT, ∇L_GT>, so γ̄_fd = that / ‖u‖².
    u_norm = np.sqrt(tree_dot(g_gt, g_gt))
    eps = 1e-2 / u_norm
    orig = shifted(model, g_gt, eps)
    plus = split_losses(model, batches).non_gt
    model.update(orig)
    shifted(model, g_gt, -eps)
    minus = split_losses(model, batches).non_gt
    model.update(orig)
    fd_dot = (plus - minus) / (2 * eps)
    gamma_fd = fd_dot / u_norm**2
    assert c.dot == pytest.approx(fd_dot, rel=2e-2, abs=1e-4 * u_norm**2)
    assert c.gamma == pytest.approx(gamma_fd, rel=2e-2, abs=1e-4)
    # The gradient norms come from the same trees; the losses are the split means.
    ref = split_losses(model, batches)
    assert c.loss_gt == pytest.approx(ref.gt, rel=1e-5)
    assert c.loss_non_gt == pytest.approx(ref.non_gt, rel=1e-5)
    assert c.n_params == sum(v.size for _, v in tree_flatten(model.parameters()))


def test_gradient_inner_product_matches_numpy(tiny_config):
    """tree_dot against a numpy dot over the flattened, concatenated parameter vector."""
    model = tiny_model(tiny_config)
    g_gt, g_ng, _, _ = split_gradients(model, [make_batch()])
    flat = lambda t: np.concatenate(  # noqa: E731
        [np.array(v, dtype=np.float64).ravel() for _, v in tree_flatten(t)]
    )
    a, b = flat(g_ng), flat(g_gt)
    assert tree_dot(g_ng, g_gt) == pytest.approx(float(a @ b), rel=1e-4)


def test_only_trainable_parameters_count(tiny_config):
    model = tiny_model(tiny_config)
    model.freeze()
    model.model.layers[1].unfreeze()
    c = measure_coupling(model, [make_batch()], check=False)
    n_layer = sum(v.size for _, v in tree_flatten(model.model.layers[1].parameters()))
    assert c.n_params == n_layer


def test_theorem3_first_order(tiny_config):
    model = tiny_model(tiny_config)
    batches = [make_batch()]
    before = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    c = measure_coupling(model, batches)  # steps at 4η0, η0, η0/4 (η0: 1% predicted GT drop)
    big, mid, small = c.checks
    # GT loss falls by ≈ η‖∇L_GT‖² and non-GT by ≈ η·γ̄·‖∇L_GT‖², to first order in η:
    assert small.actual_d_gt == pytest.approx(small.predicted_d_gt, rel=0.05)
    assert small.ratio == pytest.approx(1.0, abs=0.02)
    assert abs(small.ratio - 1) < abs(big.ratio - 1)  # error shrinks with η
    assert small.predicted_d_non_gt == pytest.approx(small.eta * c.gamma * c.gt_norm2, rel=1e-6)
    assert small.one_step_wave == pytest.approx(c.gamma, rel=0.15, abs=0.02)
    # The model is restored exactly after the trial steps.
    after = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_coupling_needs_both_classes(tiny_config):
    model = tiny_model(tiny_config)
    b = make_batch()
    b["level"] = mx.zeros_like(b["level"])
    with pytest.raises(ValueError, match="GT"):
        measure_coupling(model, [b])
