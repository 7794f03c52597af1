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
    """The paper-cited rules computed in numpy from the residual stream (no mask: every position
    is real, the last token is the last position)."""
    s = [np.array(h, dtype=np.float64).reshape(-1, h.shape[-1]) for h in block_states(model, x)]

    def cos(a, b):
        return np.clip((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1),
                       -1, 1)  # fmt: skip

    depth = len(s) - 1
    if method == "prune-bi":
        bi = np.array([1 - cos(s[i], s[i + 1]).mean() for i in range(depth)])
        return sorted(np.argsort(bi, kind="stable")[:n_drop].tolist())
    # Gromov et al.: the angular distance at each sequence's last token
    last = [np.array(h, dtype=np.float64)[:, -1] for h in block_states(model, x)]
    d = np.array([np.arccos(cos(last[i], last[i + n_drop])).mean() / np.pi
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
    with pytest.raises(ValueError, match="no calibration data"):
        shrink(model, cfg, plan_groups(4, to="2L"), "prune-bi", [])
    with pytest.raises(ValueError, match="--method 'drop'"):
        CompressConfig.from_flat(method="drop")
    paper = CompressConfig.from_flat(to="2L", method="prune-bi", recipe="paper")
    assert paper.label() == "2Lx1-prune-bi"  # SGT healing
    assert CompressConfig.from_flat(to="2L").label() == "2Lx1-prune-bi-distill"  # recipe auto


def test_angular_distance_at_each_rows_last_real_token_matches_numpy(tiny_config):
    """Rows of different lengths (response mask ending at 5 and at 8 of T = 10): the angular
    distance is read at each row's last response token, the block influence over every real
    position, both against numpy on the residual stream."""
    from cherry_mlx.compression.redundancy import analyze_layers

    model = build_model(dict(tiny_config, num_hidden_layers=3))
    x = mx.random.randint(0, tiny_config["vocab_size"], (2, 10))
    resp = np.zeros((2, 10), bool)
    resp[0, 2:6], resp[1, 3:9] = True, True  # last real tokens: 5 and 8
    batch = {"inputs": x, "response": mx.array(resp)}
    s = [np.array(h, dtype=np.float64) for h in block_states(model, x)]  # (B, T, D) each

    def cos(a, b):
        return np.clip((a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1),
                       -1, 1)  # fmt: skip

    rows, last = np.arange(2), np.array([5, 8])
    want = [np.mean(np.arccos(cos(s[i][rows, last], s[i + 2][rows, last]))) / np.pi
            for i in range(2)]  # fmt: skip
    real = np.arange(10)[None] <= last[:, None]  # (B, T): up to the last response token
    bi = [np.sum((1 - cos(s[i], s[i + 1])) * real) / real.sum() for i in range(3)]
    rep = analyze_layers(model, [batch], r=2, angular_at="last")
    np.testing.assert_allclose(rep.angular, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(rep.block_influence, bi, rtol=1e-4, atol=1e-6)
    every = analyze_layers(model, [batch], r=2)  # the diagnostic's average over positions
    avg = [np.sum(np.arccos(cos(s[i], s[i + 2])) * real) / real.sum() / np.pi for i in range(2)]
    np.testing.assert_allclose(every.angular, avg, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="angular_at"):
        analyze_layers(model, [batch], angular_at="first")


def test_pruning_is_calibrated_on_training_data_not_the_scored_batches(tiny_config, monkeypatch):
    """compress --method prune-*: the batches the layers are chosen on are the training data's,
    the held-out batches only score the result."""
    from cherry_mlx.compression import heal

    seen = {}

    def spy(model, config, groups, method, batches):
        seen["batches"] = batches
        from cherry_mlx.compression.merge import merge_model

        return merge_model(model, config, groups)

    def batch(token):
        full = np.full((2, 6), token, np.int32)
        return {
            "inputs": full,
            "targets": full,
            "response": np.ones((2, 6), bool),
            "level": np.zeros((2, 6), np.int8),
            "category": np.full((2, 6), -1, np.int8),
        }

    train, valid = [batch(7)], [batch(3)]
    data = heal.Data(train=heal_cycle(train), valid=valid, batch_size=2, seq_len=16)
    monkeypatch.setattr(heal, "shrink", spy)
    model = build_model(dict(tiny_config, num_hidden_layers=4))
    cfg = CompressConfig.from_flat(to="2L", method="prune-bi", heal=False)
    heal.merge_and_heal(model, dict(tiny_config, num_hidden_layers=4), cfg, data, "/nonexistent",
                        log=lambda *_: None)  # fmt: skip
    (calib,) = seen["batches"]
    assert np.all(np.array(calib["inputs"])[:, :6] == 7)  # the training batch, not valid's 3s
    assert data.train.pos == 0  # reading it did not advance the training iterator


def heal_cycle(batches):
    from cherry_mlx.training.data import CycleBatches

    return CycleBatches(batches)
