"""SOLAR-style depth up-scaling: layer plans, copied weights, errors, mlx-lm loading."""

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from cherry_mlx.compression.recurrent import unroll
from cherry_mlx.compression.upscale import plan_dus, upscale_model
from cherry_mlx.models import build_model, save_model


def test_solar_plan_32_to_48():
    plan = plan_dus(32, "48L", "drop")  # SOLAR: layers 0..23 of copy A, then 8..31 of copy B
    assert plan == list(range(24)) + list(range(8, 32))
    assert plan_dus(4, 8, "drop") == plan_dus(4, 8, "duplicate") == [0, 1, 2, 3, 0, 1, 2, 3]
    assert plan_dus(4, 7, "drop") == [0, 1, 2, 0, 1, 2, 3]  # odd overlap: cut from A
    assert plan_dus(4, 6, "drop") == [0, 1, 2, 1, 2, 3]
    assert plan_dus(4, 6, "duplicate") == [0, 1, 2, 3, 2, 3]


@pytest.mark.parametrize(
    "to, needle", [("4L", "needs 4 < target"), ("9", "two copies"), ("x", "layer count")]
)
def test_bad_upscale_targets(to, needle):
    with pytest.raises(ValueError, match=needle):
        plan_dus(4, to)


def test_upscaled_layers_copy_their_sources(tiny_config, tmp_path):
    from mlx_lm.utils import load_model as mlx_lm_load_model

    cfg = dict(tiny_config, num_hidden_layers=4)
    model = build_model(cfg)
    mx.eval(model.parameters())
    up, ucfg = upscale_model(model, cfg, "6L")
    assert ucfg["upscale_map"] == [0, 1, 2, 1, 2, 3]
    src = [dict(tree_flatten(layer.parameters())) for layer in model.layers]
    for j, s in enumerate(ucfg["upscale_map"]):
        for name, value in tree_flatten(up.layers[j].parameters()):
            np.testing.assert_array_equal(np.array(value), np.array(src[s][name]))
    out = save_model(up, tmp_path / "dus", ucfg)
    theirs, _ = mlx_lm_load_model(Path(out))
    x = mx.random.randint(0, cfg["vocab_size"], (1, 8))
    np.testing.assert_allclose(np.array(theirs(x)), np.array(up(x)), rtol=1e-5, atol=1e-5)


def test_two_full_copies_equal_the_stack_looped_twice(tiny_config):
    """M = 2N stacks A and B whole: the same function as looping all N layers twice (P0 C4 Q0)."""
    cfg = dict(tiny_config, num_hidden_layers=4)
    model = build_model(cfg)
    mx.eval(model.parameters())
    up, _ = upscale_model(model, cfg, 8)
    looped, _ = unroll(model, cfg, loops=2, prelude=0, coda=0)
    x = mx.random.randint(0, cfg["vocab_size"], (2, 8))
    np.testing.assert_allclose(np.array(up(x)), np.array(looped(x)), rtol=1e-5, atol=1e-5)


def test_upscaling_a_looped_model_is_refused(tiny_config):
    cfg = dict(tiny_config, num_hidden_layers=4)
    looped, lcfg = unroll(build_model(cfg), cfg, loops=2)
    with pytest.raises(ValueError, match="recurrent core"):
        upscale_model(looped, lcfg, 6)
