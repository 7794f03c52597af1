"""``import`` validates a GGUF before announcing it: every tensor the config implies, with its
shape, finite, the layer count consistent and the GGUF version one we read. Each damaged file is a
one-line error naming the file, and nothing is written (no output folder, no hidden temp)."""

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gguf")
sys.path.insert(0, str(Path(__file__).parent / "reliability"))
from gguf_fixtures import base, patch, rewrite  # noqa: E402

from cherry_mlx.models.gguf import import_gguf  # noqa: E402


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return base(tmp_path_factory.mktemp("gguf") / "good.gguf")


def _refused(bad, tmp_path, message):
    with pytest.raises(ValueError, match=message) as err:
        import_gguf(bad, tmp_path / "out")
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [bad.name]  # nothing written


def test_gguf_of_an_unknown_version_is_refused_not_read_as_v3(good, tmp_path):
    _refused(patch(good, tmp_path / "v99.gguf", 4, "I", 99), tmp_path, "GGUF version 99")


@pytest.mark.parametrize("offset", [8, 16])  # tensor count, key/value count
def test_gguf_with_an_impossible_header_count_is_one_line(good, tmp_path, offset):
    _refused(patch(good, tmp_path / "n.gguf", offset, "Q", 2**62), tmp_path, "truncated")


def test_gguf_missing_a_tensor_is_refused_at_import(good, tmp_path):
    bad = rewrite(good, tmp_path / "m.gguf", drop={"blk.0.attn_q.weight"})
    _refused(bad, tmp_path, "1 tensors .* missing .*layers.0.self_attn.q_proj")


def test_gguf_with_fewer_layers_than_block_count_is_refused(good, tmp_path):
    names = [n for n in _names(good) if n.startswith("blk.1.")]
    bad = rewrite(good, tmp_path / "l.gguf", drop=set(names))
    _refused(bad, tmp_path, f"{len(names)} tensors that its 2-layer config implies are missing")


def test_gguf_with_more_layers_than_block_count_is_refused(good, tmp_path):
    bad = rewrite(good, tmp_path / "x.gguf", kv={"llama.block_count": 1})
    _refused(bad, tmp_path, "tensors beyond its 1-layer config")


def test_gguf_with_zero_layers_is_refused(good, tmp_path):
    drop = {n for n in _names(good) if n.startswith("blk.")}
    bad = rewrite(good, tmp_path / "z.gguf", kv={"llama.block_count": 0}, drop=drop)
    _refused(bad, tmp_path, "num_hidden_layers is 0")


def test_gguf_tensor_of_the_wrong_shape_is_refused(good, tmp_path):
    grow = {"blk.0.attn_norm.weight": lambda a: np.ones(a.size + 4, np.float32)}
    _refused(rewrite(good, tmp_path / "s.gguf", tensors=grow), tmp_path, r"shape \(68,\)")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_gguf_with_non_finite_weights_is_refused_and_leaves_no_temp(good, tmp_path, value):
    spoil = {"output_norm.weight": lambda a: np.where(np.arange(a.size) == 3, value, a)}
    _refused(rewrite(good, tmp_path / "f.gguf", tensors=spoil), tmp_path, "NaN or infinite")


def test_valid_gguf_still_imports_with_the_same_weights(good, tmp_path):
    import mlx.core as mx

    out = import_gguf(good, tmp_path / "ok")
    w = mx.load(str(out / "model.safetensors"))
    import gguf

    (t,) = [t for t in gguf.GGUFReader(str(good)).tensors if t.name == "output_norm.weight"]
    np.testing.assert_array_equal(np.array(w["model.norm.weight"]), np.array(t.data))


def _names(path):
    import gguf

    return [t.name for t in gguf.GGUFReader(str(path)).tensors]
