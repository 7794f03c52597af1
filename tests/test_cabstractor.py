"""Cabstractor: shapes, the soft-MoE gate, a paper-scale parameter count, a synthetic task whose
answer only the features carry, and the ``cabstractor train`` command end to end."""

import json

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from cherry_mlx.fusion.cabstractor import (
    Cabstractor,
    CabstractorConfig,
    gate_weights,
    text_logits,
)
from cherry_mlx.fusion.cabstractor_train import (
    FeatureExample,
    exact_match,
    load_cabstractor,
    train_cabstractor,
)
from cherry_mlx.models import build_model, save_model

SMALL = dict(feature_dims=[16, 8], out_dims=64, dims=32, num_queries=4, num_heads=4)


def test_shapes_and_gate(tiny_config):
    cab = Cabstractor(CabstractorConfig(**SMALL, num_layers=2))
    a = mx.random.normal((3, 16))  # one vector per example
    b = mx.random.normal((3, 5, 8))  # a 5-token stream
    mask = mx.array([[True] * 5, [True] * 3 + [False] * 2, [True] + [False] * 4])
    soft, gates = cab.encode([a, b], [None, mask])
    assert soft.shape == (3, 4, 64) and len(gates) == 2 and gates[0].shape == (3, 4, 2)
    for g in gates:  # soft-MoE weights over the two streams: positive, summing to one
        np.testing.assert_allclose(np.array(g.sum(-1)), 1.0, rtol=1e-6)
        assert float(g.min()) > 0
    np.testing.assert_allclose(  # the gate is a softmax over streams, by numpy
        np.array(gate_weights(mx.array([[1.0, 2.0, 0.0]]))),
        np.exp([[1.0, 2.0, 0.0]]) / np.exp([[1.0, 2.0, 0.0]]).sum(),
        rtol=1e-6,
    )
    # masked stream positions are ignored: changing them changes nothing
    b2 = mx.where(mask[..., None], b, 100.0)
    np.testing.assert_allclose(
        np.array(cab([a, b2], [None, mask])), np.array(soft), rtol=1e-5, atol=1e-5
    )
    lm = build_model(tiny_config)
    ids = mx.array([[5, 6, 7]] * 3)
    assert text_logits(lm, soft, ids).shape == (3, 3, tiny_config["vocab_size"])
    with pytest.raises(ValueError, match="2 feature streams"):
        cab([a])


def test_paper_scale_is_about_42m_parameters():
    cab = Cabstractor(CabstractorConfig.paper())  # lazy: nothing allocated
    n = sum(v.size for _, v in tree_flatten(cab.parameters()))
    assert cab.queries.shape == (81, 1024) and len(cab.layers) == 3 and len(cab.inputs) == 4
    assert abs(n - 42e6) / 42e6 < 0.05, n


def _number_task(codes, n, seed):
    """The answer (token 48 + k) is in stream 0 only (k's code + noise); stream 1 is noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(len(codes)))
        a = codes[k] + 0.1 * rng.normal(size=codes.shape[1]).astype(np.float32)
        b = rng.normal(size=(3, 8)).astype(np.float32)
        out.append(FeatureExample([a[None], b], [1], [48 + k]))
    return out


def test_learns_a_number_only_the_features_carry(tiny_config):
    lm = build_model(tiny_config)  # frozen random LM
    mx.eval(lm.parameters())
    before = {k: np.array(v) for k, v in tree_flatten(lm.parameters())}
    codes = np.random.default_rng(0).normal(size=(10, 16)).astype(np.float32)
    train, test = _number_task(codes, 512, 1), _number_task(codes, 200, 2)
    cfg = CabstractorConfig(**SMALL, num_layers=1)
    cab = train_cabstractor(lm, train, cfg, steps=80, batch_size=32, learning_rate=1e-2, log=None)
    assert exact_match(cab, lm, test) > 0.9  # held-out examples, fresh noise
    # the same texts with another example's features: back to about chance (1 in 10)
    shuffled = [
        FeatureExample(test[i - 1].features, ex.prompt, ex.target) for i, ex in enumerate(test)
    ]
    assert exact_match(cab, lm, shuffled) < 0.3
    for k, v in tree_flatten(lm.parameters()):  # the LM stayed frozen
        np.testing.assert_array_equal(np.array(v), before[k])


def test_cli_trains_from_a_features_dir(tiny_config, tmp_path):
    from cherry_mlx_cli.main import app
    from typer.testing import CliRunner

    from cherry_mlx.models.loading import resolve

    tok_dir = resolve("cherry-tiny")
    cfg = dict(json.loads((tok_dir / "config.json").read_text()), num_hidden_layers=1)
    src = save_model(build_model(cfg), tmp_path / "lm", cfg, tok_dir)
    feats = tmp_path / "feats"
    feats.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        if i % 2:
            np.save(feats / f"ex{i}.npy", rng.normal(size=(2, 12)).astype(np.float32))
        else:
            mx.save_safetensors(str(feats / f"ex{i}.safetensors"), {"a": mx.random.normal((12,))})
        rows.append(json.dumps({"id": f"ex{i}", "prompt": "Which?", "text": str(i)}))
    (feats / "texts.jsonl").write_text("\n".join(rows) + "\n")
    out = tmp_path / "cab"
    args = ["cabstractor", "train", str(feats), "--model", str(src), "-o", str(out)]
    args += ["--steps", "3", "--batch-size", "2", "--num-queries", "3", "--num-layers", "1"]
    res = CliRunner().invoke(app, args + ["--dims", "16", "--num-heads", "2"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "cabstractor.json").read_text())
    assert meta["cabstractor"]["feature_dims"] == [12] and "train_exact_match" in meta
    back = load_cabstractor(out)
    assert back.queries.shape == (3, 16)
