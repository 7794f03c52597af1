"""``cabstractor train`` on bad features and diverging runs: one line naming the file, and no
cabstractor saved when the loss is not finite (a NaN model must never be announced as trained)."""

import json

import mlx.core as mx
import numpy as np
import pytest

from cherry_mlx.fusion.cabstractor import CabstractorConfig
from cherry_mlx.fusion.cabstractor_train import (
    FeatureExample,
    load_feature_examples,
    read_features,
    train_cabstractor,
)
from cherry_mlx.models import build_model


def _feats_dir(tmp_path, arrays):
    root = tmp_path / "feats"
    root.mkdir()
    rows = []
    for i, a in enumerate(arrays):
        if isinstance(a, bytes):
            (root / f"ex{i}.npy").write_bytes(a)
        else:
            np.save(root / f"ex{i}.npy", a)
        rows.append(json.dumps({"id": f"ex{i}", "text": f"t{i}"}))
    (root / "texts.jsonl").write_text("\n".join(rows) + "\n")
    return root


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((5, 16), np.nan, np.float32), "NaN or inf"),
        (np.full((5, 16), np.inf, np.float32), "NaN or inf"),
        (np.zeros((0, 16), np.float32), "shape (0, 16)"),
        (np.zeros((2, 5, 16), np.float32), "shape (2, 5, 16)"),
        (np.zeros((5, 0), np.float32), "shape (5, 0)"),
        (np.array(["a", "b"]), "must be numbers"),
        (b"\x93NUMPY garbage" + bytes(range(200)), "not a readable feature array"),
        (np.array([{"a": 1}], dtype=object), "not a readable feature array"),
    ],
)
def test_bad_feature_file_is_refused_naming_the_file(tmp_path, array, message):
    root = _feats_dir(tmp_path, [array])
    with pytest.raises(ValueError) as err:
        load_feature_examples(str(root), lambda s: [1, 2])
    msg = str(err.value)
    assert message in msg and "ex0.npy" in msg and "\n" not in msg


def test_garbage_texts_jsonl_line_names_file_and_line(tmp_path):
    root = _feats_dir(tmp_path, [np.ones((2, 4), np.float32)])
    (root / "texts.jsonl").write_text('{"id": "ex0", "text": "a"}\n{oops\n')
    with pytest.raises(ValueError, match=r"texts.jsonl:2: not JSON"):
        load_feature_examples(str(root), lambda s: [1])


def test_good_features_read_as_float32_rows(tmp_path):
    root = _feats_dir(tmp_path, [np.arange(4, dtype=np.int64)])
    (a,) = read_features(root / "ex0.npy")
    np.testing.assert_array_equal(a, np.arange(4, dtype=np.float32)[None])


def test_nan_loss_stops_training_and_nothing_is_returned_to_save(tiny_config):
    lm = build_model(tiny_config)
    mx.eval(lm.parameters())
    ex = [FeatureExample([np.ones((2, 8), np.float32)], [1], [2, 3]) for _ in range(4)]
    cfg = CabstractorConfig(feature_dims=[8], out_dims=64, dims=16, num_queries=2, num_heads=2,
                            num_layers=1)  # fmt: skip
    with pytest.raises(ValueError, match="diverged: loss nan at step 2; nothing saved"):
        train_cabstractor(lm, ex, cfg, steps=2, batch_size=2, learning_rate=float("nan"), log=None)


def test_nan_learning_rate_is_refused_before_loading():
    from cherry_mlx.fusion.config import CabTrainConfig

    with pytest.raises(ValueError, match="--learning-rate"):
        CabTrainConfig(features_dir="x", learning_rate=float("nan"))


def test_diverged_cli_run_saves_no_cabstractor(tiny_config, tmp_path):
    from cherry_mlx_cli.main import app
    from typer.testing import CliRunner

    from cherry_mlx.models import save_model
    from cherry_mlx.models.loading import resolve

    tok_dir = resolve("cherry-tiny")
    cfg = dict(json.loads((tok_dir / "config.json").read_text()), num_hidden_layers=1)
    src = save_model(build_model(cfg), tmp_path / "lm", cfg, tok_dir)
    root = _feats_dir(tmp_path, [np.ones((2, 8), np.float32)] * 4)
    out = tmp_path / "cab"
    args = ["cabstractor", "train", str(root), "--model", str(src), "-o", str(out), "--steps", "2"]
    args += ["--batch-size", "2", "--num-queries", "2", "--num-layers", "1", "--dims", "16"]
    res = CliRunner().invoke(app, args + ["--num-heads", "2", "--learning-rate", "1e30"])
    assert isinstance(res.exception, ValueError) and "diverged" in str(res.exception)
    assert not out.exists()


@pytest.mark.parametrize(
    "option, value",
    [("num_queries", 0), ("valid_fraction", 1.5), ("batch_size", 0), ("dims", -1),
     ("valid_fraction", float("nan")), ("steps", 0)],
)  # fmt: skip
def test_cabstractor_option_out_of_range_is_refused_by_name(option, value):
    from cherry_mlx.fusion.config import CabTrainConfig

    with pytest.raises(ValueError, match="--" + option.replace("_", "-")):
        CabTrainConfig(features_dir="x", **{option: value})
