"""NVFP4 / MXFP4 / affine quantisation: error bounds, the tensor-scale fold, reload in mlx-lm."""

import json

import mlx.core as mx
import numpy as np
import pytest

from cherry_mlx.models import build_model, load_model, save_model
from cherry_mlx.quant.fold import fold_tensor_scales, target_scale
from cherry_mlx.quant.quantize import MODES, quant_error, quantize_model, weight_memory

# E2M1 grid {0, .5, 1, 1.5, 2, 3, 4, 6}: the widest relative gap is between 4 and 6, so rounding
# to nearest costs at most 1/5 of a value (at 5), and the block scale (amax/6 in E4M3, 3 mantissa
# bits) adds at most 1/16. A Gaussian tensor's RMS error is far below these worst cases: we bound
# the relative Frobenius error by 0.12 (measured ~0.095 at every magnitude with the tensor scale).
NVFP4_BOUND = 0.12


def _plain_error(w):
    q, sc = mx.quantize(w, mode="nvfp4")
    d = mx.dequantize(q, sc, mode="nvfp4", dtype=mx.float32)
    return (mx.linalg.norm(d - w) / mx.linalg.norm(w)).item()


@pytest.mark.parametrize("amax", [1.0, 0.02, 2e-3, 1e-5])
def test_nvfp4_error_bound_across_magnitudes(amax):
    w = mx.random.normal((64, 256)) * (amax / 4)
    assert quant_error(w, "nvfp4") < NVFP4_BOUND
    # elementwise: every weight within a fifth of its block's largest magnitude, plus scale rounding
    s = target_scale(w)
    q, sc = mx.quantize(w * s, mode="nvfp4")
    d = np.array(mx.dequantize(q, sc, mode="nvfp4", dtype=mx.float32) / s).reshape(64, 16, 16)
    wb = np.array(w).reshape(64, 16, 16)
    bmax = np.abs(wb).max(-1, keepdims=True)
    assert (np.abs(d - wb) <= bmax * (1 / 6 + 1 / 16) + 1e-12).all()


def test_small_weights_collapse_without_the_tensor_scale():
    """Why the fold exists: plain NVFP4 zeroes a tensor with amax 0.002; the scaled one does not."""
    w = mx.random.normal((32, 128)) * 5e-4
    q, sc = mx.quantize(w, mode="nvfp4")
    plain = mx.dequantize(q, sc, mode="nvfp4", dtype=mx.float32)
    assert mx.abs(plain).max().item() == 0.0
    assert quant_error(w, "nvfp4") < NVFP4_BOUND


def test_fold_is_exact_in_full_precision(tiny_config):
    """Folding powers of two through norms and linear branches leaves the function unchanged."""
    cfg = {**tiny_config, "mtp": {"num_heads": 2}}
    model = build_model(cfg)
    mx.eval(model.parameters())
    for layer in model.layers:  # give the matrices realistic small magnitudes
        layer.self_attn.v_proj.weight = layer.self_attn.v_proj.weight * 0.01
        layer.mlp.down_proj.weight = layer.mlp.down_proj.weight * 0.003
    x = mx.array([[1, 2, 3, 4, 5, 6, 7]])
    ref = model(x)
    h = model.hidden(x)
    ref_heads = model.logits(model.mtp.sequence_states(model, h, x)[1])
    before = [_plain_error(layer.mlp.down_proj.weight) for layer in model.layers]
    folded = fold_tensor_scales(model)
    assert folded["model.layers.0"]["v"] > 1 and folded["mtp.heads.1"]["proj"] > 1
    np.testing.assert_allclose(np.array(model(x)), np.array(ref), rtol=1e-4, atol=1e-4)
    h = model.hidden(x)
    np.testing.assert_allclose(
        np.array(model.logits(model.mtp.sequence_states(model, h, x)[1])),
        np.array(ref_heads),
        rtol=1e-4,
        atol=1e-4,
    )
    # plain NVFP4 (what nn.quantize applies) of every folded matrix is now within the bound,
    # though the small v/down matrices collapsed before the fold
    for layer, err in zip(model.layers, before):
        assert err > 0.9
        for m in (
            layer.self_attn.q_proj,
            layer.self_attn.v_proj,
            layer.self_attn.o_proj,
            layer.mlp.gate_proj,
            layer.mlp.up_proj,
            layer.mlp.down_proj,
        ):
            assert _plain_error(m.weight) < NVFP4_BOUND


@pytest.mark.parametrize("mode", list(MODES))
def test_quantized_model_close_and_reloads(tiny_config, tmp_path, mode):
    cfg = dict(tiny_config)
    model = build_model(cfg)
    mx.eval(model.parameters())
    x = mx.array([[5, 9, 2, 77, 31, 8]])
    ref = np.array(model(x))
    before = weight_memory(model)
    qmodel, qcfg = quantize_model(model, cfg, mode, keep=["embed"])
    after = weight_memory(qmodel)
    out = np.array(qmodel(x))
    rel = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    assert rel < {"affine8": 0.02}.get(mode, 0.35), rel  # 4-bit errors compound in random nets
    assert after["bytes"] < before["bytes"]
    # 4-bit values + an 8-bit scale per 16 (nvfp4) / 32 (mxfp4); affine: an fp32 scale and bias
    # per 64 for this fp32 model
    expected = {"nvfp4": 4.5, "mxfp4": 4.25, "affine4": 5.0, "affine8": 9.0}[mode]
    assert abs(after["quantized_bits_per_weight"] - expected) < 1e-6
    assert "scales" not in qmodel.model.embed_tokens  # kept in full precision
    save_model(qmodel, tmp_path / "q", qcfg)
    loaded, _ = load_model(tmp_path / "q")
    np.testing.assert_allclose(np.array(loaded(x)), out, atol=1e-5)
    # a plain Llama config loads in mlx-lm itself
    from mlx_lm.utils import load_model as mlx_lm_load

    mlm, _ = mlx_lm_load(tmp_path / "q")
    np.testing.assert_allclose(np.array(mlm(x)), out, atol=1e-5)
    saved = json.loads((tmp_path / "q" / "config.json").read_text())
    assert saved["quantization"]["mode"] == MODES[mode][0]


def test_quantized_looped_mtp_model_reloads(tiny_config, tmp_path):
    cfg = {
        **tiny_config,
        "num_hidden_layers": 3,
        "mtp": {"num_heads": 2},
        "recurrence": {"prelude": 1, "core": 1, "coda": 1, "loops": 2},
    }
    model = build_model(cfg)
    mx.eval(model.parameters())
    qmodel, qcfg = quantize_model(model, cfg, "nvfp4")
    save_model(qmodel, tmp_path / "q", qcfg)
    loaded, _ = load_model(tmp_path / "q")
    x = mx.array([[1, 2, 3]])
    np.testing.assert_allclose(np.array(loaded(x)), np.array(qmodel(x)), atol=1e-5)
    assert "scales" in loaded.mtp.heads[0].proj


def test_quantize_command(tiny_config, tmp_path):
    from cherry_mlx_cli.main import app
    from typer.testing import CliRunner

    model = build_model(tiny_config)
    mx.eval(model.parameters())
    save_model(model, tmp_path / "m", tiny_config)
    res = CliRunner().invoke(
        app,
        [
            "quantize",
            str(tmp_path / "m"),
            "--mode",
            "nvfp4",
            "--keep",
            "lm_head",
            "-o",
            str(tmp_path / "q"),
            "--eval-batches",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "4.50 in quantised matrices" in res.output and "lm_head" in res.output
    loaded, cfg = load_model(tmp_path / "q")
    assert "scales" not in loaded.lm_head and "scales" in loaded.layers[0].mlp.up_proj
    assert cfg["quantization"]["mode"] == "nvfp4"


def test_keep_typo_is_an_error_and_tied_lm_head_keeps_embedding(tiny_config):
    # a --keep item that names no layer used to be accepted silently (and reported as "kept")
    model = build_model(tiny_config)
    mx.eval(model.parameters())
    with pytest.raises(ValueError, match="--keep 'atn' matches no layer"):
        quantize_model(model, dict(tiny_config), "nvfp4", keep=["atn"])
    # in a tied model the LM head is the embedding matrix: --keep lm_head keeps it
    cfg = {**tiny_config, "tie_word_embeddings": True}
    model = build_model(cfg)
    mx.eval(model.parameters())
    qmodel, qcfg = quantize_model(model, cfg, "nvfp4", keep=["lm_head"])
    assert "scales" not in qmodel.model.embed_tokens
    assert "scales" in qmodel.model.layers[0].mlp.up_proj


def _small_model(cfg, std=0.002, seed=0):
    """A model whose every matrix has std ``std`` (plain NVFP4 zeroes most of such weights)."""
    from mlx.utils import tree_map

    mx.random.seed(seed)
    model = build_model(cfg)
    model.update(
        tree_map(
            lambda w: mx.random.normal(w.shape) * std if w.ndim == 2 else w, model.parameters()
        )
    )
    mx.eval(model.parameters())
    return model


def _np_forward_ref(model, x):
    """Full-precision logits as float64 numpy (the reference before any quantisation)."""
    return np.array(model(x)).astype(np.float64)


@pytest.mark.parametrize("tied", [True, False])
def test_nvfp4_embedding_gets_a_tensor_scale(tiny_config, tmp_path, tied):
    """The embedding (and a tied LM head) is scaled through the residual stream: with std 0.002
    weights plain NVFP4 loses ~all of the signal, the folded model stays close, and the saved
    model (with its rescaled rms_norm_eps) reloads in mlx-lm."""
    cfg = {**tiny_config, "tie_word_embeddings": tied}
    x = mx.array([[5, 9, 2, 77, 31, 8, 100, 200]])
    errors = {}
    for fold in (True, False):
        model = _small_model(cfg)
        emb = np.array(model.model.embed_tokens.weight)
        ref = _np_forward_ref(model, x)
        qmodel, qcfg = quantize_model(model, dict(cfg), "nvfp4", fold=fold)
        out = np.array(qmodel(x)).astype(np.float64)
        errors[fold] = np.linalg.norm(out - ref) / np.linalg.norm(ref)
        e = qmodel.model.embed_tokens
        deq = np.array(mx.dequantize(e.weight, e.scales, mode="nvfp4", dtype=mx.float32))
        s_e = qcfg["cherry_quant"].get("embed_scale", 1.0)
        emb_err = np.linalg.norm(deq / s_e - emb) / np.linalg.norm(emb)
        if fold:
            assert s_e > 1 and emb_err < NVFP4_BOUND
            assert qcfg["rms_norm_eps"] == pytest.approx(cfg["rms_norm_eps"] * s_e**2)
            save_model(qmodel, tmp_path / "q", qcfg)
            from mlx_lm.utils import load_model as mlx_lm_load

            mlm, _ = mlx_lm_load(tmp_path / "q")
            np.testing.assert_allclose(np.array(mlm(x)), out, rtol=1e-4, atol=1e-5)
        else:
            assert emb_err > 0.9  # the collapse the scale prevents
    assert errors[True] < 0.2 and errors[False] > 0.9, errors


def test_embedding_fold_is_exact_in_full_precision(tiny_config):
    from cherry_mlx.quant.fold import fold_embedding_scale

    for tied in (True, False):
        cfg = {**tiny_config, "tie_word_embeddings": tied}
        model = _small_model(cfg)
        x = mx.array([[1, 2, 3, 4, 5, 6, 7]])
        ref = np.array(model(x))
        s_e = fold_embedding_scale(model, cfg)
        assert s_e >= 2**10
        np.testing.assert_allclose(np.array(model(x)), ref, rtol=1e-5, atol=1e-7)


def test_mtp_model_keeps_an_unscalable_embedding(tiny_config):
    """With MTP heads the stream cannot be rescaled (their hnorm reads the final norm's output):
    an embedding plain NVFP4 would zero is kept in full precision instead, and said so."""
    model = _small_model({**tiny_config, "mtp": {"num_heads": 1}})
    qmodel, qcfg = quantize_model(model, {**tiny_config, "mtp": {"num_heads": 1}}, "nvfp4")
    assert qcfg["cherry_quant"]["auto_kept"] == ["embed"]
    assert "scales" not in qmodel.model.embed_tokens


def test_keep_with_a_mode_quantises_that_layer_in_it_and_reloads(tiny_config, tmp_path):
    """``--keep embed:affine8``: the tied embedding (and so the LM head) in 8-bit affine, every
    other matrix in NVFP4; the embedding equals MLX's own affine-8 round trip of the source, and
    the saved model reloads (mlx-lm's per-layer config) with the same logits."""
    cfg = {**tiny_config, "tie_word_embeddings": True}
    model = build_model(cfg)
    mx.eval(model.parameters())
    w = model.model.embed_tokens.weight
    expect = mx.dequantize(*mx.quantize(w, 64, 8), group_size=64, bits=8)
    x = mx.array([[1, 5, 9, 3, 7]])
    qmodel, qcfg = quantize_model(model, cfg, "nvfp4", keep=["embed:affine8"])
    emb = qmodel.model.embed_tokens
    assert (emb.bits, emb.mode) == (8, "affine")
    np.testing.assert_allclose(np.array(emb(mx.arange(cfg["vocab_size"]))), np.array(expect),
                               atol=1e-6)  # fmt: skip
    assert qmodel.model.layers[0].mlp.up_proj.mode == "nvfp4"
    assert qcfg["quantization"]["model.embed_tokens"]["bits"] == 8
    save_model(qmodel, tmp_path / "q", qcfg)
    again, _ = load_model(tmp_path / "q")
    np.testing.assert_allclose(np.array(again(x)), np.array(qmodel(x)), atol=1e-5)
    with pytest.raises(ValueError, match="'affine7' is no mode"):
        quantize_model(build_model(cfg), cfg, "nvfp4", keep=["embed:affine7"])


@pytest.mark.parametrize("mode", list(MODES))
def test_dequantized_model_computes_what_the_quantized_one_does(tiny_config, mode):
    """The repro scores quantised models on their dequantised weights (fp32 matmuls are faster
    on CPU): the logits must agree with MLX's quantised kernels up to float rounding."""
    from cherry_mlx.quant.quantize import dequantize

    cfg = {**tiny_config, "tie_word_embeddings": True}
    model = build_model(cfg)
    mx.eval(model.parameters())
    q, _ = quantize_model(model, cfg, mode)
    x = mx.array([[3, 1, 4, 1, 5, 9, 2, 6]])
    want = np.array(q(x))
    got = np.array(dequantize(q)(x))
    assert "scales" not in q.model.layers[0].mlp.up_proj  # really fp32 now
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_keep_accepts_the_mixed_precision_widths(tiny_config):
    """A bits budget gives layers affine5/affine6; the same NAME:MODE typed by hand is accepted
    (and quantises that layer at that width) rather than refused as an unknown mode."""
    model = build_model(tiny_config)
    mx.eval(model.parameters())
    qmodel, _ = quantize_model(model, tiny_config, "nvfp4", keep=["layers.0.mlp.up_proj:affine6"])
    layer = qmodel.model.layers[0].mlp.up_proj
    assert (layer.mode, layer.bits) == ("affine", 6)
    assert qmodel.model.layers[1].mlp.up_proj.mode == "nvfp4"
