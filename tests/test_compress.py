"""Adjacent-layer merging: numpy averages, identical layers, grouping errors, save/load, mlx-lm."""

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from cherry_mlx.compression.merge import merge_model, parse_depth, plan_groups
from cherry_mlx.compression.recurrent import unroll
from cherry_mlx.models import build_model, load_model, save_model


def _model(cfg, layers):
    cfg = dict(cfg, num_hidden_layers=layers)
    model = build_model(cfg)
    mx.eval(model.parameters())
    return model, cfg


def _np_layer(model, i):
    return {k: np.array(v) for k, v in tree_flatten(model.layers[i].parameters())}


def test_merged_weights_are_numpy_average(tiny_config):
    model, cfg = _model(tiny_config, 6)
    groups = plan_groups(6, groups="0-2,3,4-5")
    merged, mcfg = merge_model(model, cfg, groups)
    assert mcfg["num_hidden_layers"] == 3 and len(merged.layers) == 3
    assert mcfg["merge_map"] == [[0, 1, 2], [3], [4, 5]]
    for j, g in enumerate(groups):
        src = [_np_layer(model, i) for i in g]
        got = _np_layer(merged, j)
        assert set(got) == set(src[0]) and len(got) == 9  # norms included
        for name, value in got.items():
            expect = np.mean([s[name] for s in src], axis=0)
            np.testing.assert_allclose(value, expect, rtol=1e-6, atol=1e-7)
    # non-layer weights are untouched
    np.testing.assert_array_equal(
        np.array(merged.model.embed_tokens.weight), np.array(model.model.embed_tokens.weight)
    )
    np.testing.assert_array_equal(np.array(merged.lm_head.weight), np.array(model.lm_head.weight))


def test_merge_map_composes_across_merges(tiny_config):
    model, cfg = _model(tiny_config, 8)
    m1, c1 = merge_model(model, cfg, plan_groups(8, factor=2))
    m2, c2 = merge_model(m1, c1, plan_groups(4, to="2L"))
    assert c2["merge_map"] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    one_shot, _ = merge_model(model, cfg, plan_groups(8, to=2))
    for a, b in zip(tree_flatten(m2.parameters()), tree_flatten(one_shot.parameters())):
        np.testing.assert_allclose(np.array(a[1]), np.array(b[1]), rtol=1e-5, atol=1e-7)


def test_merging_identical_layers_changes_nothing(tiny_config):
    """r copies of one block average to that block, and the merged block looped r times (P0 C1 Q0)
    computes exactly what the r-layer stack did."""
    model, cfg = _model(tiny_config, 4)
    block = tree_flatten(model.layers[0].parameters())
    same = [(f"model.layers.{i}.{k}", v) for i in range(4) for k, v in block]
    model.load_weights(same, strict=False)
    merged, mcfg = merge_model(model, cfg, plan_groups(4, to="1L"))
    for name, value in _np_layer(merged, 0).items():
        np.testing.assert_array_equal(value, _np_layer(model, 0)[name])  # 4x / 4 is exact
    looped, _ = unroll(merged, mcfg, loops=4, prelude=0, coda=0)
    x = mx.random.randint(0, cfg["vocab_size"], (2, 12))
    np.testing.assert_allclose(np.array(looped(x)), np.array(model(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"to": "12L"}, "upscale"),
        ({"to": "six"}, "not a layer count"),
        ({"to": "0L"}, "not a layer count"),
        ({"factor": 3}, "does not divide"),
        ({"groups": "0-2,4-7"}, "adjacent"),
        ({"groups": "3,3"}, "adjacent"),
        ({"groups": "a,b"}, "not sizes"),
        ({}, "exactly one"),
        ({"to": "4L", "factor": 2}, "exactly one"),
    ],
)
def test_bad_targets_are_clear_errors(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        plan_groups(8, **kwargs)


def test_target_forms():
    assert parse_depth("6L") == parse_depth("6l") == parse_depth(6) == parse_depth(" 6 ") == 6
    assert plan_groups(8, to="4L") == plan_groups(8, factor=2) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert plan_groups(8, groups="3,3,2") == [[0, 1, 2], [3, 4, 5], [6, 7]]


def test_merging_a_looped_model_is_refused(tiny_config):
    model, cfg = _model(tiny_config, 4)
    looped, lcfg = unroll(model, cfg, loops=2)
    with pytest.raises(ValueError, match="recurrent core"):
        merge_model(looped, lcfg, plan_groups(4, to=2))


def test_merged_model_saves_as_plain_llama_and_mlx_lm_loads_it(tiny_config, tmp_path):
    from mlx_lm.utils import load_model as mlx_lm_load_model

    model, cfg = _model(tiny_config, 4)
    merged, mcfg = merge_model(model, cfg, plan_groups(4, to="2L"))
    out = save_model(merged, tmp_path / "merged", mcfg)
    assert not (Path(out) / "cherry_model.py").exists()  # an ordinary Llama checkpoint
    x = mx.random.randint(0, cfg["vocab_size"], (1, 10))
    ours = np.array(merged(x))
    theirs, _ = mlx_lm_load_model(Path(out))  # plain mlx-lm, its own llama class
    assert type(theirs).__module__ == "mlx_lm.models.llama"
    np.testing.assert_allclose(np.array(theirs(x)), ours, rtol=1e-5, atol=1e-5)
    back, bcfg = load_model(out)
    assert bcfg["merge_map"] == [[0, 1], [2, 3]]
    np.testing.assert_array_equal(np.array(back(x)), ours)


def test_layer_diagnostics_find_an_identity_block(tiny_config, tmp_path):
    """A block whose output projections are zero adds nothing to the residual stream: its block
    influence and the angular distance across it are 0, and it ranks as the most redundant."""
    from cherry_mlx.compression.analyze import analyze_layers, block_states, plot_report

    model, cfg = _model(tiny_config, 4)
    for i in (2, 3):  # layers 2 and 3 become the identity
        layer = model.layers[i]
        layer.self_attn.o_proj.weight = mx.zeros_like(layer.self_attn.o_proj.weight)
        layer.mlp.down_proj.weight = mx.zeros_like(layer.mlp.down_proj.weight)
    x = mx.random.randint(0, cfg["vocab_size"], (2, 12))
    batches = [{"inputs": x}]
    report = analyze_layers(model, batches, r=2)
    assert report.tokens == 24 and len(report.block_influence) == 4 and len(report.angular) == 3
    assert report.block_influence[2] == pytest.approx(0, abs=1e-6)
    assert report.block_influence[3] == pytest.approx(0, abs=1e-6)
    assert report.angular[2] == pytest.approx(0, abs=1e-3)  # arccos near 1 is steep
    assert report.groups[0]["layers"] == [2, 3]
    # independent numpy check of layer 0's BI and d_2 from the residual stream
    s = [np.array(h).reshape(-1, cfg["hidden_size"]) for h in block_states(model, x)]

    def cos(a, b):
        return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)

    assert report.block_influence[0] == pytest.approx(1 - cos(s[0], s[1]).mean(), rel=1e-4)
    ang = np.arccos(np.clip(cos(s[0], s[2]), -1, 1)).mean() / np.pi
    assert report.angular[0] == pytest.approx(ang, rel=1e-4)
    assert Path(plot_report(report, tmp_path / "layers.png")).stat().st_size > 1000


def test_cli_reports_bad_to_before_reading_data(tiny_config, tmp_path):
    from cherry_mlx_cli.main import app
    from typer.testing import CliRunner

    model, cfg = _model(tiny_config, 4)
    src = save_model(model, tmp_path / "src", cfg)
    runner = CliRunner()
    res = runner.invoke(app, ["compress", str(src), "--to", "5L", "--data", str(tmp_path / "no")])
    assert isinstance(res.exception, ValueError) and "upscale" in str(res.exception)
    res = runner.invoke(app, ["compress", str(src), "--to", "2L", "--loops", "4"])
    assert isinstance(res.exception, ValueError) and "no core layer" in str(res.exception)
    res = runner.invoke(app, ["upscale", str(src), "--to", "6L", "-o", str(tmp_path / "up")])
    assert res.exit_code == 0, res.output
    assert load_model(tmp_path / "up")[1]["upscale_map"] == [0, 1, 2, 1, 2, 3]


def test_recipe_sets_method_and_healing_unless_given():
    """Default (auto): distillation with block-influence pruning without loops, the paper's
    averaging + SGT with loops; --recipe distill loops a pruned core (prune-loop); explicit
    --method/--heal-with win; a sweep heals with SGT."""
    from cherry_mlx.compression.config import CompressConfig

    def pick(**kw):
        c = CompressConfig.from_flat(to="6L", **kw)
        return c.method, c.heal_with

    assert pick() == ("prune-bi", "distill")
    assert pick(loops=8) == ("average", "sgt")
    assert pick(recipe="distill", loops=8) == ("prune-loop", "distill")
    assert pick(recipe="paper", loops=8) == ("average", "sgt")
    assert pick(method="average") == ("average", "distill")
    assert pick(heal_with="sgt") == ("average", "sgt")
    assert pick(sweep=True) == ("average", "sgt")
    with pytest.raises(ValueError, match="--recipe 'x'"):
        pick(recipe="x")
