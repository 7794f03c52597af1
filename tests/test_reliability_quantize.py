"""``quantize --keep`` items that change meaning silently, and counts that skip work silently: an
empty layer name matches every layer (the whole model would leave --mode), one name with two
treatments has no single meaning, and zero or negative counts are refused before any work."""

import pytest

from cherry_mlx.models import build_model
from cherry_mlx.pipelines.quantize import QuantReport
from cherry_mlx.pipelines.quantize_config import QuantizeConfig
from cherry_mlx.quant.keep import check_keep
from cherry_mlx.quant.quantize import MODES, quantize_model


@pytest.mark.parametrize("keep", [":affine8", " : mxfp4", "attn,:affine4"])
def test_keep_with_an_empty_layer_name_is_refused_not_applied_to_every_layer(keep, tiny_config):
    with pytest.raises(ValueError, match="names no layer"):
        QuantizeConfig(model="m", keep=keep)
    with pytest.raises(ValueError, match="names no layer"):  # the library call too
        quantize_model(build_model(tiny_config), dict(tiny_config), "nvfp4", keep=keep.split(","))


@pytest.mark.parametrize(
    "keep", ["embed:affine8,embed:mxfp4", "embed,embed:affine8", "attn:affine8, attn"]
)
def test_keep_giving_one_layer_two_treatments_is_refused(keep):
    with pytest.raises(ValueError, match="two treatments"):
        QuantizeConfig(model="m", keep=keep)


@pytest.mark.parametrize("keep", ["auto:nan", "auto:inf", "auto:-1", "auto:", "auto:x"])
def test_keep_auto_budget_must_be_a_finite_number(keep):
    with pytest.raises(ValueError, match="auto:BITS"):
        QuantizeConfig(model="m", keep=keep)


def test_keep_with_two_auto_budgets_is_refused():
    with pytest.raises(ValueError, match="2 auto budgets"):
        check_keep("auto,auto:6", list(MODES))


def test_valid_keep_lists_pass_unchanged():
    assert check_keep(" embed:affine8, attn ,,auto:6", list(MODES)) == [
        "embed:affine8", "attn", "auto:6"
    ]  # fmt: skip
    assert check_keep("embed,embed", list(MODES)) == ["embed", "embed"]  # same meaning twice


def test_layers_in_another_mode_are_not_reported_as_full_precision():
    q = {"bits_per_weight": 5.0, "quantized_bits_per_weight": 4.5, "bytes": 50}
    text = QuantReport("nvfp4", "o", {"bytes": 100}, q, ["attn", "embed:affine8"]).summary()
    assert "kept in full precision: attn\n" in text and "other formats: embed:affine8" in text


@pytest.mark.parametrize(
    "option, value", [("eval_batches", -5), ("calib_samples", 0), ("calib_samples", -1)]
)
def test_quantize_counts_below_their_minimum_are_refused_by_name(option, value):
    flag = "--" + option.replace("_", "-")
    with pytest.raises(ValueError, match=flag):
        QuantizeConfig(model="m", **{option: value})
