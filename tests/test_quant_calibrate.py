"""Calibrated quantisation: GPTQ and AWQ beat round-to-nearest where inputs have outlier channels,
``--keep auto`` keeps the layer that was made sensitive."""

import mlx.core as mx
import numpy as np
import pytest

from cherry_mlx.models import build_model
from cherry_mlx.quant.gptq import gptq_linear
from cherry_mlx.quant.quantize import MODES, quantize_model
from cherry_mlx.quant.sensitivity import choose_kept, parse_auto


def _tokens(seed, B=4, T=32):
    return mx.array(np.random.default_rng(seed).integers(0, 256, size=(B, T)), dtype=mx.int32)


def _outlier_model(cfg):
    """Tiny model whose norms amplify 4 of 64 channels 8x: the Linear inputs get the outlier
    channels real LLMs have, which round-to-nearest ignores and GPTQ compensates for."""
    mx.random.seed(0)
    model = build_model(cfg)
    gain = np.ones(cfg["hidden_size"], np.float32)
    gain[[3, 17, 40, 60]] = 8.0
    for layer in model.layers:
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            norm.weight = mx.array(gain)
    mx.eval(model.parameters())
    return model


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("mode", ["nvfp4", "affine4"])
def test_calibration_lowers_output_error_vs_round_to_nearest(tiny_config, mode):
    calib = [_tokens(i) for i in range(4)]
    held = _tokens(99)
    errors = {}
    for calibrate in (None, "gptq", "awq"):
        model = _outlier_model(tiny_config)
        ref = np.array(model(held))
        q, qcfg = quantize_model(model, dict(tiny_config), mode, keep=["embed", "lm_head"],
                                 calibrate=calibrate, calib=calib)  # fmt: skip
        errors[calibrate] = _rel(np.array(q(held)), ref)
        if calibrate == "gptq":
            assert qcfg["cherry_quant"]["gptq_layers"] == 14  # 7 Linear layers x 2 blocks
    assert errors["gptq"] < 0.85 * errors[None], errors
    assert errors["awq"] < 0.95 * errors[None], errors  # measured 0.91x affine4, < 0.85x nvfp4


def test_awq_scales_are_exact_in_full_precision(tiny_config):
    """AWQ only moves channel scales between a layer and the one feeding it."""
    from cherry_mlx.quant.awq import awq_scale

    model = _outlier_model(tiny_config)
    x = _tokens(5)
    ref = np.array(model(x))
    spread = awq_scale(model, [_tokens(1)], "nvfp4", 16, 4)
    assert max(spread["model.layers.0"]) > 1.5  # it did rescale the outlier channels
    np.testing.assert_allclose(np.array(model(x)), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["nvfp4", "mxfp4", "affine4"])
def test_gptq_packs_exactly_what_mlx_would(mode):
    """With uncorrelated inputs (H = I) GPTQ is round-to-nearest: the packed weights and scales
    equal mx.quantize's bit for bit (checks our FP4 rounding, sign and nibble layout)."""
    _, group, bits = MODES[mode]
    w = np.array(mx.random.normal((32, 64)) * 0.3)
    mlx_mode = MODES[mode][0]
    parts = gptq_linear(w, np.eye(64), mlx_mode, group, bits, damp=0.0)
    ref = mx.quantize(mx.array(w.astype(np.float32)), group, bits, mode=mlx_mode)
    np.testing.assert_array_equal(np.array(parts["weight"]), np.array(ref[0]))
    np.testing.assert_array_equal(np.array(parts["scales"]), np.array(ref[1]))


def _sensitive_model(cfg, outlier):
    """Layer 1's down projection gets one ``outlier``x weight per block of 16 on input channels
    the gate switches off (rows of gate_proj zeroed): the full-precision function ignores them,
    but NVFP4's block scale follows them and rounds the other 15 weights of every block to ~0."""
    mx.random.seed(0)
    model = build_model(cfg)
    mx.eval(model.parameters())
    mlp = model.layers[1].mlp
    w = np.array(mlp.down_proj.weight)
    w[:, ::16] *= outlier
    mlp.down_proj.weight = mx.array(w) * 3.0
    g = np.array(mlp.gate_proj.weight)
    g[::16] = 0.0
    mlp.gate_proj.weight = mx.array(g)
    mx.eval(model.parameters())
    return model


def test_keep_auto_keeps_the_sensitive_layer(tiny_config):
    calib = [_tokens(i) for i in range(2)]
    target = "model.layers.1.mlp.down_proj"
    chosen = {}
    for outlier in (1.0, 1000.0):
        model = _sensitive_model(tiny_config, outlier)
        x = _tokens(7)
        ref = np.array(model(x))
        q, qcfg = quantize_model(model, dict(tiny_config), "nvfp4", keep=["auto:6.8"],
                                 calib=calib)  # fmt: skip
        info = qcfg["cherry_quant"]
        chosen[outlier] = info["keep_auto"]
        assert info["keep_auto_bits"] <= 6.8
    sens = info["sensitivity"]
    assert max(sens, key=sens.get) == target and sens[target] > 10 * sorted(sens.values())[-2]
    assert chosen[1000.0] == [target] and target not in chosen[1.0]
    assert "scales" not in q.layers[1].mlp.down_proj and "scales" in q.layers[0].mlp.down_proj
    plain, _ = quantize_model(_sensitive_model(tiny_config, 1000.0), dict(tiny_config), "nvfp4")
    assert _rel(np.array(q(x)), ref) < 0.6 * _rel(np.array(plain(x)), ref)


def test_choose_kept_respects_the_budget():
    sizes = {"a": 100, "b": 100, "c": 800}
    sens = {"a": 1.0, "b": 0.1, "c": 5.0}  # per parameter: a 0.01, c 0.00625, b 0.001
    kept, bits = choose_kept(sizes, sens, q_bits=4.0, budget=4.0 + 28.0 * 200 / 1000)
    assert kept == ["a", "b"] and bits == pytest.approx(4.0 + 28.0 * 0.2)
    assert parse_auto("auto", 4.5) == 5.0 and parse_auto("auto:6", 4.5) == 6.0
    assert parse_auto("embed", 4.5) is None
    with pytest.raises(ValueError, match="below"):
        parse_auto("auto:3", 4.5)
    with pytest.raises(ValueError, match="calibration data"):
        quantize_model(None, {}, "nvfp4", keep=["auto"])
