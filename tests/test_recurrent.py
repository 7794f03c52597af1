"""Weight-tied recurrent core: loops=1 identity, tied gradients, KV caches, memory, round trips."""

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from cherry_mlx.compression.merge import merge_model, plan_groups
from cherry_mlx.compression.recurrent import plan_recurrence, unroll, untie, weight_bytes
from cherry_mlx.models import build_model, load_model, save_model


def _model(cfg, layers):
    cfg = dict(cfg, num_hidden_layers=layers)
    model = build_model(cfg)
    mx.eval(model.parameters())
    return model, cfg


def _ce(model, x, y):
    return nn.losses.cross_entropy(model(x), y, reduction="mean")


def test_six_by_eight_is_34_effective_layers():
    rec = plan_recurrence(6, loops=8)
    assert (rec.prelude, rec.core, rec.coda, rec.effective_depth) == (1, 4, 1, 34)
    with pytest.raises(ValueError, match="no core layer"):
        plan_recurrence(2, loops=4)
    with pytest.raises(ValueError, match="loops"):
        plan_recurrence(6, loops=0)


def test_loops_one_reproduces_the_merged_model(tiny_config):
    model, cfg = _model(tiny_config, 8)
    merged, mcfg = merge_model(model, cfg, plan_groups(8, to="4L"))
    x = mx.random.randint(0, cfg["vocab_size"], (2, 16))
    # recurrence recorded with loops=1 (P1 C2 Q1) runs exactly the merged stack
    looped = build_model(dict(mcfg, recurrence={"prelude": 1, "core": 2, "coda": 1, "loops": 1}))
    looped.load_weights(list(tree_flatten(merged.parameters())))
    np.testing.assert_array_equal(np.array(looped(x)), np.array(merged(x)))
    plain, pcfg = unroll(merged, mcfg, loops=1)
    assert "recurrence" not in pcfg
    np.testing.assert_array_equal(np.array(plain(x)), np.array(merged(x)))


def test_looped_model_equals_its_untied_twin_and_tied_grad_is_the_sum(tiny_config):
    model, cfg = _model(tiny_config, 4)
    looped, lcfg = unroll(model, cfg, loops=3, prelude=1, coda=1)  # schedule 0,1,2,1,2,1,2,3
    assert list(looped.model.schedule) == [0, 1, 2, 1, 2, 1, 2, 3]
    twin, _ = untie(looped, lcfg)
    assert len(twin.layers) == 8
    x = mx.random.randint(0, cfg["vocab_size"], (2, 10))
    y = mx.random.randint(0, cfg["vocab_size"], (2, 10))
    np.testing.assert_allclose(np.array(looped(x)), np.array(twin(x)), rtol=1e-5, atol=1e-5)

    _, g_tied = nn.value_and_grad(looped, _ce)(looped, x, y)
    _, g_twin = nn.value_and_grad(twin, _ce)(twin, x, y)
    tied = dict(tree_flatten(g_tied))
    untied = dict(tree_flatten(g_twin))
    for name, grad in tied.items():
        if not name.startswith("model.layers."):
            np.testing.assert_allclose(np.array(grad), np.array(untied[name]), rtol=1e-4, atol=1e-6)
            continue
        idx, rest = name[len("model.layers.") :].split(".", 1)
        steps = [s for s, u in enumerate(looped.model.schedule) if u == int(idx)]
        expect = sum(np.array(untied[f"model.layers.{s}.{rest}"]) for s in steps)
        np.testing.assert_allclose(np.array(grad), expect, rtol=1e-4, atol=1e-6)


def test_checkpointing_gives_the_same_gradients(tiny_config):
    model, cfg = _model(tiny_config, 4)
    looped, _ = unroll(model, cfg, loops=3)
    x = mx.random.randint(0, cfg["vocab_size"], (2, 10))
    y = mx.random.randint(0, cfg["vocab_size"], (2, 10))
    loss_a, g_a = nn.value_and_grad(looped, _ce)(looped, x, y)
    looped.model.checkpoint = True
    loss_b, g_b = nn.value_and_grad(looped, _ce)(looped, x, y)
    np.testing.assert_allclose(loss_a.item(), loss_b.item(), rtol=1e-6)
    for (na, a), (nb, b) in zip(tree_flatten(g_a), tree_flatten(g_b)):
        assert na == nb
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-6)


def test_cached_generation_matches_uncached_for_looped_model(tiny_config):
    model, cfg = _model(tiny_config, 4)
    looped, _ = unroll(model, cfg, loops=3)
    cache = looped.make_cache()
    assert len(cache) == 8  # one KV cache per (layer, loop)
    tokens = mx.random.randint(0, cfg["vocab_size"], (1, 6))
    logits = looped(tokens, cache=cache)[:, -1]
    for _ in range(5):  # greedy decode with the cache, check each step against a full forward
        full = looped(tokens)[:, -1]
        np.testing.assert_allclose(np.array(logits), np.array(full), rtol=1e-4, atol=1e-4)
        nxt = mx.argmax(logits, axis=-1)[:, None]
        tokens = mx.concatenate([tokens, nxt], axis=1)
        logits = looped(nxt, cache=cache)[:, -1]
    assert all(c.offset == tokens.shape[1] for c in cache)  # the last token went in too


def test_six_by_eight_weight_memory_is_six_layers(tiny_config, tmp_path):
    six, cfg6 = _model(tiny_config, 6)
    looped, lcfg = unroll(six, cfg6, loops=8)
    assert looped.args.effective_depth == 34
    assert weight_bytes(looped) == weight_bytes(six)
    deep = build_model(dict(tiny_config, num_hidden_layers=34))
    per_layer = weight_bytes(build_model(dict(tiny_config, num_hidden_layers=1))) - weight_bytes(
        build_model(dict(tiny_config, num_hidden_layers=0))
    )
    assert weight_bytes(deep) - weight_bytes(looped) == 28 * per_layer
    # the core's arrays are the same objects on every loop: one buffer, no copies
    core = looped.model.layers[1].mlp.up_proj.weight
    assert core is looped.model.layers[looped.model.schedule[5]].mlp.up_proj.weight
    out = save_model(looped, tmp_path / "6x8", lcfg)
    saved = mx.load(str(Path(out) / "model.safetensors"))
    layer_ids = {k.split(".")[2] for k in saved if k.startswith("model.layers.")}
    assert layer_ids == set(map(str, range(6)))
    assert sum(v.nbytes for v in saved.values()) == weight_bytes(six)


def test_looped_model_round_trips_and_loads_in_mlx_lm(tiny_config, tmp_path):
    from mlx_lm.utils import load_model as mlx_lm_load_model

    model, cfg = _model(tiny_config, 8)
    merged, mcfg = merge_model(model, cfg, plan_groups(8, to="4L"))
    looped, lcfg = unroll(merged, mcfg, loops=3)
    out = save_model(looped, tmp_path / "looped", lcfg)
    x = mx.random.randint(0, cfg["vocab_size"], (1, 9))
    ours = np.array(looped(x))
    back, bcfg = load_model(out)
    assert bcfg["recurrence"] == {"prelude": 1, "core": 2, "coda": 1, "loops": 3}
    assert bcfg["merge_map"] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    np.testing.assert_array_equal(np.array(back(x)), ours)
    with pytest.raises(ValueError, match="trust_remote_code"):
        mlx_lm_load_model(Path(out))
    theirs, _ = mlx_lm_load_model(Path(out), trust_remote_code=True)
    assert theirs.args.effective_depth == 1 + 3 * 2 + 1
    np.testing.assert_allclose(np.array(theirs(x)), ours, rtol=1e-6, atol=1e-6)
