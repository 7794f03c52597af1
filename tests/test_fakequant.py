"""Fake quantisation and distillation-calibrated quantisation (DWQ): the fake forward is the
dequantised matmul, only scale parameters train, trained scales pack back into the real format
and the saved model reloads in mlx-lm with the fake model's logits; DWQ's targets come from the
one teacher cache and equal the teacher's own log-softmax."""

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from _train_helpers import tiny_model_dir
from mlx.utils import tree_flatten

from cherry_mlx.data.teacher_cache import CacheError, TeacherCache
from cherry_mlx.models import build_model, save_model
from cherry_mlx.models.loading import load_model
from cherry_mlx.quant.distill import DistillConfig, cache_targets, distill, mean_topk_kl, topk_kl
from cherry_mlx.quant.fakequant import FakeQuantLinear, from_fake, round_scale, to_fake
from cherry_mlx.quant.quantize import quantize_model

FORMATS = [("nvfp4", 16, 4), ("mxfp4", 32, 4), ("affine", 32, 4), ("affine", 64, 8)]
TOK = Path(__file__).resolve().parents[1] / "weights" / "cherry-tiny"


def _topk(logits, k):
    """numpy reference: top-k ids (int32) and full-softmax log-probabilities (fp16)."""
    lg = np.array(logits, np.float64)
    logp = lg - np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1, keepdims=True))
    logp -= lg.max(-1, keepdims=True)
    idx = np.argsort(-lg, axis=-1)[..., :k]
    return mx.array(idx.astype(np.int32)), mx.array(np.take_along_axis(logp, idx, -1), mx.float16)


_teacher_dir = tiny_model_dir


def _prose(path: Path) -> Path:
    words = "the cat sat on a mat while old dogs ran far over green hills".split()
    rng = np.random.default_rng(0)
    path.write_text("".join(json.dumps({"text": " ".join(rng.choice(words, 30))}) + "\n"
                            for _ in range(40)))  # fmt: skip
    return path


def _cache(model_dir: Path, out: Path, data: Path, k: int = 16) -> Path:
    from cherry_mlx.training.teacher import build_cache
    from cherry_mlx.training.teacher_config import TeacherConfig

    cfg = TeacherConfig(model=str(model_dir), out=str(out), data=str(data), k=k, seq_len=16,
                        rows_per_shard=4, batch_size=4)  # fmt: skip
    return build_cache(cfg, log=id)


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
    idx, lp = _topk(build_model(tiny_config)(x[:, :-1]), 8)

    def loss(m):
        return topk_kl(m(x[:, :-1]), idx, lp)

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
    idx, lp = _topk(t, 11)
    p = np.exp(np.array(t)) / np.exp(np.array(t)).sum(-1, keepdims=True)
    q = np.exp(np.array(s)) / np.exp(np.array(s)).sum(-1, keepdims=True)
    per = (p * (np.log(p) - np.log(q))).sum(-1)  # (2, 3)
    assert abs(topk_kl(s, idx, lp).item() - per.mean()) < 2e-3  # targets stored in fp16
    mask = mx.array([[True, False, True], [False, False, True]])
    ref = per[np.array(mask)].mean()  # padded positions do not count
    assert abs(topk_kl(s, idx, lp, mask).item() - ref) < 2e-3


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


def test_distillation_lowers_the_topk_kl_and_resumes(tmp_path):
    model_dir = _teacher_dir(tmp_path / "m")
    targets = cache_targets(TeacherCache.open(_cache(model_dir, tmp_path / "c",
                                                     _prose(tmp_path / "p.jsonl"))))  # fmt: skip
    teacher, config = load_model(model_dir)
    tokens, idx, lp, mask = targets
    assert tokens.shape[0] >= 8 and bool(mask.all())  # packed prose: every position is real
    ref_idx, ref_lp = _topk(teacher(tokens[:, :-1]), 16)  # the teacher's own log-softmax
    np.testing.assert_array_equal(np.array(idx), np.array(ref_idx))
    np.testing.assert_allclose(np.array(lp, np.float32), np.array(ref_lp, np.float32), atol=3e-2)
    model, _ = quantize_model(teacher, dict(config), "nvfp4")  # in place: the student
    to_fake(model)
    before = mean_topk_kl(model, targets)
    cfg = DistillConfig(steps=30, batch_size=4, lr=2e-2, warmup=2, log_every=5)
    st = distill(model, targets, cfg, tmp_path / "s", stop_after=15, log=lambda s: None)
    assert st.step == 15
    st = distill(model, targets, cfg, tmp_path / "s", log=lambda s: None)  # resumes at 15
    assert st.step == 30 and len(st.losses) == 30
    assert mean_topk_kl(model, targets) < 0.8 * before


def test_quantize_with_bits_budget_and_distilled_scales(tmp_path):
    """The command's library call: 8-bit layers chosen within the budget, scales distilled
    against a teacher cache of the model (built by the command when none is given; a cache of
    another model refused), the packed model computing the trained logits, saved and reloaded
    in mlx-lm."""
    from mlx_lm.utils import load_model as mlx_lm_load

    from cherry_mlx.pipelines.quantize import dwq_teacher, quantize
    from cherry_mlx.pipelines.quantize_config import QuantizeConfig

    m = _teacher_dir(tmp_path / "m")
    data = _prose(tmp_path / "p.jsonl")
    qc = QuantizeConfig(model=str(m), out=str(tmp_path / "q"), dwq_steps=12, dwq_topk=16,
                        calib_data=str(data), calib_samples=8)  # fmt: skip
    assert not qc.needs_calibration  # DWQ reads its cache's tokens
    cache = dwq_teacher(qc, m, qc.out, log=id)  # built into OUT/teacher-cache
    assert cache == tmp_path / "q" / "teacher-cache"
    built = TeacherCache.open(cache)
    assert built.k == 16 and built.rows == 8
    calib = [mx.random.randint(0, 4096, (4, 33)) for _ in range(2)]
    cfg = DistillConfig(steps=12, batch_size=4, lr=2e-2, warmup=2, log_every=6)
    other = _cache(_teacher_dir(tmp_path / "o", seed=1), tmp_path / "oc", data)
    with pytest.raises(CacheError, match="oc was built from another source model .*DWQ"):
        quantize(str(m), tmp_path / "q", "nvfp4", dwq=cfg, teacher_cache=other, log=id)
    rep = quantize(str(m), tmp_path / "q", "nvfp4", batches=None, calib=calib,
                   bits_budget=5.0, dwq=cfg, teacher_cache=cache, log=lambda s: None)  # fmt: skip
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
