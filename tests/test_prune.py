"""Pruning baselines (compress --method prune-bi|prune-angular) against a numpy reference on a
model whose block 2 is the identity: both methods must drop it, and dropping it changes nothing."""

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from cherry_mlx.compression.config import CompressConfig
from cherry_mlx.compression.merge import plan_groups
from cherry_mlx.compression.prune import dropped_layers, prune_model, prune_plan, shrink
from cherry_mlx.compression.redundancy import block_states
from cherry_mlx.models import build_model


def _identity_at(cfg, layers, idx):
    cfg = dict(cfg, num_hidden_layers=layers)
    model = build_model(cfg)
    for i in idx:  # zero output projections: the block adds nothing to the residual stream
        layer = model.layers[i]
        layer.self_attn.o_proj.weight = mx.zeros_like(layer.self_attn.o_proj.weight)
        layer.mlp.down_proj.weight = mx.zeros_like(layer.mlp.down_proj.weight)
    mx.eval(model.parameters())
    return model, cfg


def _numpy_choice(model, x, n_drop, method):
    """The paper-cited rules computed in numpy from the residual stream."""
    s = [np.array(h, dtype=np.float64).reshape(-1, h.shape[-1]) for h in block_states(model, x)]

    def cos(a, b):
        return np.clip((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1),
                       -1, 1)  # fmt: skip

    depth = len(s) - 1
    if method == "prune-bi":
        bi = np.array([1 - cos(s[i], s[i + 1]).mean() for i in range(depth)])
        return sorted(np.argsort(bi, kind="stable")[:n_drop].tolist())
    d = np.array([np.arccos(cos(s[i], s[i + n_drop])).mean() / np.pi
                  for i in range(depth - n_drop + 1)])  # fmt: skip
    start = int(np.flatnonzero(d <= d.min() + 1e-6).max())  # deepest of the minima
    return list(range(start, start + n_drop))


@pytest.mark.parametrize("method", ["prune-bi", "prune-angular"])
def test_identity_block_is_dropped_and_output_unchanged(tiny_config, method):
    model, cfg = _identity_at(tiny_config, 4, [2])
    x = mx.random.randint(0, cfg["vocab_size"], (2, 12))
    keep = prune_plan(model, [{"inputs": x}], n_keep=3, method=method)
    assert [i for i in range(4) if i not in keep] == _numpy_choice(model, x, 1, method) == [2]
    pruned, pcfg = prune_model(model, cfg, keep)
    assert pcfg["num_hidden_layers"] == 3 and pcfg["merge_map"] == [[0], [1], [3]]
    # the kept layers are copies of the source's layers 0, 1, 3; the identity block did nothing
    src = dict(tree_flatten(model.layers[3].parameters()))
    for k, v in tree_flatten(pruned.layers[2].parameters()):
        np.testing.assert_array_equal(np.array(v), np.array(src[k]))
    np.testing.assert_allclose(np.array(pruned(x)), np.array(model(x)), rtol=1e-5, atol=1e-5)


def test_two_layer_drop_matches_numpy(tiny_config):
    """Blocks 1 and 2 are the identity: BI drops both; the angular rule drops the block [1, 3)."""
    model, cfg = _identity_at(tiny_config, 5, [1, 2])
    x = mx.random.randint(0, cfg["vocab_size"], (2, 10))
    for method in ("prune-bi", "prune-angular"):
        keep = prune_plan(model, [{"inputs": x}], n_keep=3, method=method)
        dropped = [i for i in range(5) if i not in keep]
        assert dropped == _numpy_choice(model, x, 2, method) == [1, 2]


def test_rules_on_given_scores():
    """Hand-computed: lowest-BI layers wherever they are vs the contiguous minimum-angle block,
    ties going to the deepest block."""
    bi = [0.5, 0.1, 0.4, 0.05, 0.3]
    assert dropped_layers(bi, [], 2, "prune-bi") == [1, 3]
    assert dropped_layers(bi, [0.3, 0.2, 0.2, 0.25], 2, "prune-angular") == [2, 3]
    with pytest.raises(ValueError, match="cannot drop"):
        dropped_layers(bi, [], 5, "prune-bi")


def test_shrink_dispatch_and_config_errors(tiny_config):
    model, cfg = _identity_at(tiny_config, 4, [])
    avg, acfg = shrink(model, cfg, plan_groups(4, to="2L"), "average", [])
    assert acfg["merge_map"] == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="no valid data"):
        shrink(model, cfg, plan_groups(4, to="2L"), "prune-bi", [])
    with pytest.raises(ValueError, match="--method 'drop'"):
        CompressConfig.from_flat(method="drop")
    assert CompressConfig.from_flat(to="2L", method="prune-bi").label() == "2Lx1-prune-bi"
