"""SGT distillation (Eq. 11): KL vs numpy, zero for teacher = student, GT-only teacher logits."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from cherry_mlx.fusion.distill import (
    attach_teacher,
    distill_positions,
    kl_rows,
    make_distill_loss,
    quantize_teacher,
)
from cherry_mlx.models.loading import build_model
from cherry_mlx.selection.losses import gt_mask, sgt_loss


def _model(cfg, seed):
    mx.random.seed(seed)
    m = build_model(cfg)
    mx.eval(m.parameters())
    return m


def _batch(vocab=256, B=3, T=16, seed=0):
    rng = np.random.default_rng(seed)
    toks = rng.integers(0, vocab, size=(B, T + 1))
    resp = np.zeros((B, T), bool)
    resp[:, 4:] = True
    level = ((rng.random((B, T)) < 0.25) & resp).astype(np.int8)
    return {
        "inputs": mx.array(toks[:, :-1], dtype=mx.int32),
        "targets": mx.array(toks[:, 1:], dtype=mx.int32),
        "response": mx.array(resp),
        "level": mx.array(level),
        "category": mx.array(np.where(level > 0, 0, -1).astype(np.int8)),
    }


def _np_log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def test_kl_rows_matches_numpy():
    t = mx.random.normal((7, 50)) * 2
    s = mx.random.normal((7, 50)) * 2
    tlp = t - mx.logsumexp(t, axis=-1, keepdims=True)
    lt, ls = _np_log_softmax(np.array(t)), _np_log_softmax(np.array(s))
    ref = (np.exp(lt) * (lt - ls)).sum(-1)
    np.testing.assert_allclose(np.array(kl_rows(tlp, s)), ref, rtol=1e-4, atol=1e-5)


def test_distill_loss_is_eq11_sum_plus_sgt(tiny_config):
    teacher, student = _model(tiny_config, 1), _model(tiny_config, 2)
    batch = attach_teacher(_batch(), teacher)
    lam, beta = 0.7, 0.5
    loss, ntoks = make_distill_loss(lam, beta)(student, batch)
    # independent reference: full logits of both models, KL summed over GT positions (numpy)
    mask = np.array(gt_mask(batch))
    lt = _np_log_softmax(np.array(teacher(batch["inputs"])))
    ls = _np_log_softmax(np.array(student(batch["inputs"])))
    kl = (np.exp(lt) * (lt - ls)).sum(-1)  # (B, T)
    kd = (kl * mask).sum() / mask.shape[0]  # Eq. 11 per example (a sum), mean over examples
    sgt = float(sgt_loss(student, batch, lam)[0])
    assert float(loss) == pytest.approx(sgt + beta * kd, rel=1e-4)
    assert float(ntoks) == float(np.array(batch["response"]).sum())


def test_in_step_teacher_equals_stored_logits(tiny_config):
    teacher, student = _model(tiny_config, 1), _model(tiny_config, 2)
    batch = attach_teacher(_batch(), teacher)
    stored = make_distill_loss(0.7, 1.0)(student, batch)[0]
    live = {k: v for k, v in batch.items() if k != "kd_logp"}
    computed = make_distill_loss(0.7, 1.0, teacher=teacher)(student, live)[0]
    assert float(computed) == pytest.approx(float(stored), rel=1e-5)


def test_kl_zero_when_teacher_is_student(tiny_config):
    m = _model(tiny_config, 3)
    batch = attach_teacher(_batch(), m, positions="all")
    sgt = float(sgt_loss(m, batch, 0.7)[0])
    assert float(make_distill_loss(0.7, 1.0)(m, batch)[0]) == pytest.approx(sgt, abs=1e-5)


def test_only_gt_teacher_logits_are_materialised(tiny_config):
    teacher = _model(tiny_config, 1)
    seen = []
    head = teacher.logits
    teacher.logits = lambda h: (seen.append(h.shape), head(h))[1]
    batch = _batch(B=4, T=32)
    out = attach_teacher(batch, teacher)
    n_gt = int(np.array(gt_mask(batch)).sum())
    assert 0 < n_gt < 4 * 32 // 2
    # the LM head ran on the padded GT rows only, never on (B, T): memory is G'·V, not B·T·V
    assert seen == [(64, 64)] and out["kd_logp"].shape == (64, 256)
    assert int(out["pos_valid"].sum()) == n_gt
    idx, w = distill_positions(batch, "gt", pad_to=8)
    assert idx.shape[0] == -(-n_gt // 8) * 8
    flat = np.flatnonzero(np.array(gt_mask(batch)).reshape(-1))
    np.testing.assert_array_equal(np.array(idx)[:n_gt], flat)
    with pytest.raises(ValueError, match="positions"):
        distill_positions(batch, "some")


def test_quantised_nvfp4_teacher_is_close(tiny_config):
    teacher = _model(tiny_config, 1)
    batch = _batch()
    full = attach_teacher(batch, teacher)["kd_logp"]
    quantize_teacher(teacher, "nvfp4")
    assert isinstance(teacher.model.layers[0].mlp.up_proj, nn.QuantizedLinear)
    q = attach_teacher(batch, teacher)["kd_logp"]
    n = int(full.shape[0])
    kl = kl_rows(full, q)[:n]
    assert float(kl.max()) < 0.05  # 4-bit weights change the teacher a little, not wholesale


def test_distill_run_lowers_kl(tmp_path, tiny_config):
    from cherry_mlx.fusion.distill import DistillConfig, distill
    from cherry_mlx.models.loading import save_model
    from cherry_mlx.training.data import CycleBatches

    t = save_model(_model(tiny_config, 1), tmp_path / "t", tiny_config)
    s = save_model(_model(tiny_config, 2), tmp_path / "s", tiny_config)
    batches = [{k: np.array(v) for k, v in _batch(B=4, T=32, seed=i).items()} for i in range(2)]
    cfg = DistillConfig.from_flat(teacher=str(t), student=str(s), steps=10, learning_rate=1e-2,
                        eval_every=10, seq_len=32, batch_size=4, beta=1.0,
                        runs_dir=str(tmp_path / "runs"), name="kd")  # fmt: skip
    rep = distill(cfg, CycleBatches(batches), batches)
    assert [r["step"] for r in rep["kd"]] == [0, 10]
    assert rep["kd"][-1]["kd"] < 0.8 * rep["kd"][0]["kd"]


def test_kd_log_names_the_distilled_positions(capsys):
    """--positions all must not be reported as a GT-only KL (the log and plot said 'GT')."""
    from cherry_mlx.fusion.distill import _KDLog, make_distill_loss

    for positions, label in (("gt", "KL(GT, per example)"), ("all", "KL(all, per example)")):
        log = _KDLog(None, [], make_distill_loss(positions=positions))
        log.on_eval(0, {"total": 1.0, "gt": 1.0, "non_gt": 1.0})
        assert label in capsys.readouterr().out


def test_nvfp4_teacher_gets_tensor_scales(tiny_config):
    """--teacher-quant nvfp4 goes through the same fold as quantize: a teacher with std 0.002
    weights (plain NVFP4 would zero it) keeps its log-probabilities."""
    from mlx.utils import tree_map

    cfg = {**tiny_config, "tie_word_embeddings": True}
    teacher = _model(cfg, 1)
    teacher.update(
        tree_map(
            lambda w: mx.random.normal(w.shape) * 0.002 if w.ndim == 2 else w, teacher.parameters()
        )  # fmt: skip
    )
    mx.eval(teacher.parameters())
    x = mx.array([[5, 9, 2, 77, 31, 8, 100, 200]])
    ref = np.array(teacher(x)).astype(np.float64)
    quantize_teacher(teacher, "nvfp4", dict(cfg))
    assert "scales" in teacher.model.embed_tokens
    out = np.array(teacher(x)).astype(np.float64)
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 0.2


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_temperature_kl_matches_numpy(T):
    """T²·KL(softmax(t/T) ‖ softmax(s/T)), computed from the stored T=1 teacher log-probs."""
    t = mx.random.normal((6, 40)) * 3
    s = mx.random.normal((6, 40)) * 3
    tlp = t - mx.logsumexp(t, axis=-1, keepdims=True)
    lt = _np_log_softmax(np.array(t, np.float64) / T)
    ls = _np_log_softmax(np.array(s, np.float64) / T)
    ref = T**2 * (np.exp(lt) * (lt - ls)).sum(-1)
    np.testing.assert_allclose(np.array(kl_rows(tlp, s, T)), ref, rtol=1e-4, atol=1e-6)
    if T != 1.0:  # the temperature changes the value (the test can fail)
        assert not np.allclose(np.array(kl_rows(tlp, s, 1.0)), ref, rtol=1e-2)


def test_distill_loss_uses_the_temperature(tiny_config):
    teacher, student = _model(tiny_config, 1), _model(tiny_config, 2)
    batch = attach_teacher(_batch(), teacher)
    n = int(np.array(batch["pos_valid"]).sum())
    base, _ = make_distill_loss(0.7, 0.0)(student, batch)  # the SGT part alone
    loss, _ = make_distill_loss(0.7, 1.0, temperature=2.0)(student, batch)
    h = student.hidden(batch["inputs"])
    rows = np.array(h.reshape(-1, h.shape[-1]))[np.array(batch["pos"])[:n]]
    s_logits = np.array(student.logits(mx.array(rows)), np.float64)
    lt = _np_log_softmax(np.array(batch["kd_logp"], np.float64)[:n] / 2.0)
    ls = _np_log_softmax(s_logits / 2.0)
    kd = 4.0 * (np.exp(lt) * (lt - ls)).sum() / batch["inputs"].shape[0]
    assert float(loss) == pytest.approx(float(base) + kd, rel=1e-4)
    with pytest.raises(ValueError, match="temperature"):
        make_distill_loss(temperature=0.0)
