"""Fake quantisation and distillation-calibrated quantisation (DWQ): the fake forward is the
dequantised matmul, only scale parameters train, trained scales pack back into the real format
and the saved model reloads in mlx-lm with the fake model's logits."""

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from mlx.utils import tree_flatten

from cherry_mlx.models import build_model, save_model
from cherry_mlx.quant.distill import DistillConfig, distill, mean_topk_kl, teacher_topk, topk_kl
from cherry_mlx.quant.fakequant import FakeQuantLinear, from_fake, round_scale, to_fake
from cherry_mlx.quant.quantize import quantize_model

FORMATS = [("nvfp4", 16, 4), ("mxfp4", 32, 4), ("affine", 32, 4), ("affine", 64, 8)]


def _perturb(model, amount=0.05):
    """Move every trainable scale parameter away from zero (as training would)."""
    params = tree_flatten(model.trainable_parameters())
    model.update(
        __import__("mlx.utils", fromlist=["tree_unflatten"]).tree_unflatten(
            [(k, mx.random.uniform(-amount, amount, v.shape)) for k, v in params]
        )
    )


@pytest.mark.parametrize("mode,group,bits", FORMATS)
def test_fake_forward_is_dequantise_then_matmul(mode, group, bits):
    lin = nn.Linear(128, 24, bias=True)
    q = nn.QuantizedLinear.from_linear(lin, group, bits, mode=mode)
    x = mx.random.normal((5, 128))
    fake = FakeQuantLinear(q)
    _perturb(fake, 0.2)
    # reference: the format's own dequantisation of the packed (rounded) trained scales, in numpy
    packed = fake.to_quantized()
    w = mx.dequantize(packed.weight, packed.scales, packed.get("biases"), group, bits, mode=mode,
                      dtype=mx.float32)  # fmt: skip
    ref = np.array(x) @ np.array(w).T + np.array(lin.bias)
    np.testing.assert_allclose(np.array(fake(x)), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(packed(x)), ref, rtol=1e-4, atol=1e-4)  # real kernel


def test_scales_round_to_what_the_format_stores():
    s = mx.array([0.3, 7.3, 1.0, 0.011])
    np.testing.assert_allclose(np.array(round_scale(s, "nvfp4")), [0.3125, 7.5, 1.0, 0.01171875])
    np.testing.assert_allclose(np.array(round_scale(s, "mxfp4")), [0.25, 8.0, 1.0, 2.0**-7])
    np.testing.assert_array_equal(np.array(round_scale(s, "affine")), np.array(s))


@pytest.mark.parametrize("mode", ["nvfp4", "affine4"])
def test_gradients_reach_only_quantisation_parameters(tiny_config, mode):
    model = build_model(tiny_config)
    model, _ = quantize_model(model, dict(tiny_config), mode)
    paths = to_fake(model)
    assert paths and "model.embed_tokens" in paths  # the tied embedding trains too
    frozen = {k: np.array(v) for k, v in tree_flatten(model.parameters())}
    names = {k.rsplit(".", 1)[-1] for k, _ in tree_flatten(model.trainable_parameters())}
    assert names == ({"theta", "beta"} if mode == "affine4" else {"theta"})
    x = mx.array([[3, 7, 11, 200, 5, 9, 1]])
    tg = teacher_topk(build_model(tiny_config), x, k=8)

    def loss(m):
        return topk_kl(m(x[:, :-1]), tg[1], tg[2])

    _, grads = nn.value_and_grad(model, loss)(model)
    for k, g in tree_flatten(grads):
        assert k.endswith(("theta", "beta")) and mx.abs(g).sum().item() > 0, k
    opt = optim.Adam(1e-2)
    opt.update(model, grads)
    for k, v in tree_flatten(model.parameters()):
        if not k.endswith(("theta", "beta")):
            np.testing.assert_array_equal(np.array(v), frozen[k], err_msg=k)


def test_topk_kl_with_the_whole_vocabulary_is_the_kl_divergence():
    t = mx.random.normal((2, 3, 11))
    s = mx.random.normal((2, 3, 11))
    tg = teacher_topk(lambda x: t, mx.zeros((2, 4), dtype=mx.int32), k=11)
    p = np.exp(np.array(t)) / np.exp(np.array(t)).sum(-1, keepdims=True)
    q = np.exp(np.array(s)) / np.exp(np.array(s)).sum(-1, keepdims=True)
    ref = (p * (np.log(p) - np.log(q))).sum(-1).mean()
    assert abs(topk_kl(s, tg[1], tg[2]).item() - ref) < 2e-3  # targets stored in fp16


@pytest.mark.parametrize("mode", ["nvfp4", "mxfp4", "affine4"])
def test_trained_model_saves_and_reloads_in_mlx_lm_with_equal_logits(tiny_config, tmp_path, mode):
    from mlx_lm.utils import load_model as mlx_lm_load

    model = build_model(tiny_config)
    model, qcfg = quantize_model(model, dict(tiny_config), mode)
    to_fake(model)
    _perturb(model)
    x = mx.array([[5, 9, 2, 77, 31, 8]])
    fake = np.array(model(x))
    from_fake(model)
    save_model(model, tmp_path / "q", qcfg)
    mlm, _ = mlx_lm_load(tmp_path / "q")
    np.testing.assert_allclose(np.array(mlm(x)), fake, rtol=1e-4, atol=1e-4)


def test_distillation_lowers_the_topk_kl_and_resumes(tiny_config, tmp_path):
    teacher = build_model(tiny_config)
    mx.eval(teacher.parameters())
    tokens = mx.random.randint(0, tiny_config["vocab_size"], (8, 17))
    targets = teacher_topk(teacher, tokens, k=16)
    model, _ = quantize_model(teacher, dict(tiny_config), "nvfp4")  # in place: the student
    to_fake(model)
    before = mean_topk_kl(model, targets)
    cfg = DistillConfig(steps=30, batch_size=4, lr=2e-2, warmup=2, log_every=5)
    st = distill(model, targets, cfg, tmp_path / "s", stop_after=15, log=lambda s: None)
    assert st.step == 15
    st = distill(model, targets, cfg, tmp_path / "s", log=lambda s: None)  # resumes at 15
    assert st.step == 30 and len(st.losses) == 30
    assert mean_topk_kl(model, targets) < 0.8 * before


def test_quantize_with_bits_budget_and_distilled_scales(tiny_config, tmp_path):
    """The command's library call: 8-bit layers chosen within the budget, scales distilled,
    the packed model computing the trained logits, saved and reloaded in mlx-lm."""
    from mlx_lm.utils import load_model as mlx_lm_load

    from cherry_mlx.pipelines.quantize import quantize

    model = build_model(tiny_config)
    mx.eval(model.parameters())
    save_model(model, tmp_path / "m", tiny_config)
    calib = [mx.random.randint(0, tiny_config["vocab_size"], (4, 33)) for _ in range(2)]
    cfg = DistillConfig(steps=12, batch_size=4, lr=2e-2, warmup=2, log_every=6)
    rep = quantize(str(tmp_path / "m"), tmp_path / "q", "nvfp4", batches=None, calib=calib,
                   bits_budget=5.0, dwq=cfg, dwq_topk=16, log=lambda s: None)  # fmt: skip
    c = rep.calibration
    assert c["upgraded"] and c["budget_bits"] <= 5.0
    assert c["dwq"]["kl_last"] < c["dwq"]["kl_first"]
    assert c["dwq"]["real_vs_fake_max_abs"] < 1e-4
    saved, conf = mlx_lm_load(tmp_path / "q")
    per_layer = {k: v for k, v in conf["quantization"].items() if isinstance(v, dict)}
    assert set(per_layer) == set(c["upgraded"])
    mods = dict(saved.named_modules())
    for p, m in c["upgraded"].items():
        assert per_layer[p]["bits"] == mods[p].bits == int(m[-1])
