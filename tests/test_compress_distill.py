"""Top-k distillation loss against a numpy reference: renormalisation, temperature, the tail
bucket, and the SGT weighting."""

import mlx.core as mx
import numpy as np
import pytest

from cherry_mlx.training.topk_kd import make_kd_loss, to_mx, topk_kl


def _logsoftmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _teacher(rng, B, T, V, k):
    t_logits = rng.normal(size=(B, T, V)) * 3
    idx = np.argsort(-t_logits, -1)[..., :k]
    val = np.take_along_axis(t_logits, idx, -1)
    lse = np.log(np.exp(t_logits).sum(-1))
    return t_logits, idx, val, lse


@pytest.mark.parametrize("temp", [1.0, 2.0])
def test_renorm_matches_numpy(temp):
    rng = np.random.default_rng(0)
    B, T, V, k = 2, 5, 50, 6
    _, idx, val, lse = _teacher(rng, B, T, V, k)
    s = rng.normal(size=(B, T, V)) * 2
    got = np.array(topk_kl(mx.array(s), mx.array(idx), mx.array(val), mx.array(lse), temp))
    p = np.exp(_logsoftmax(val / temp))  # teacher renormalised over its k ids
    q = np.take_along_axis(_logsoftmax(s / temp), idx, -1)  # student full-vocab log-probs
    want = (p * (np.log(p) - q)).sum(-1) * temp**2
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_renorm_is_zero_only_for_the_renormalised_teacher():
    rng = np.random.default_rng(1)
    B, T, V, k = 1, 3, 40, 5
    _, idx, val, lse = _teacher(rng, B, T, V, k)
    s = np.full((B, T, V), -1e4)
    np.put_along_axis(s, idx, val, -1)  # all mass on the top k, in the teacher's proportions
    got = np.array(topk_kl(mx.array(s), mx.array(idx), mx.array(val), mx.array(lse)))
    np.testing.assert_allclose(got, 0.0, atol=1e-5)
    s2 = s.copy()
    s2[..., np.setdiff1d(np.arange(V), idx[0, 0])[0]] = val.max()  # leak mass outside top k
    leak = np.array(topk_kl(mx.array(s2), mx.array(idx), mx.array(val), mx.array(lse)))
    assert leak[0, 0] > 0.1


def test_tail_is_exact_kl_over_k_plus_one_buckets():
    rng = np.random.default_rng(2)
    B, T, V, k = 2, 4, 30, 4
    t_logits, idx, val, lse = _teacher(rng, B, T, V, k)
    s = rng.normal(size=(B, T, V))
    got = np.array(topk_kl(mx.array(s), mx.array(idx), mx.array(val), mx.array(lse), mode="tail"))
    tp = np.exp(_logsoftmax(t_logits))
    sp = np.exp(_logsoftmax(s))
    pt = np.take_along_axis(tp, idx, -1)
    ps = np.take_along_axis(sp, idx, -1)
    pt = np.concatenate([pt, 1 - pt.sum(-1, keepdims=True)], -1)
    ps = np.concatenate([ps, 1 - ps.sum(-1, keepdims=True)], -1)
    want = (pt * (np.log(pt) - np.log(ps))).sum(-1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # with k = V the tail vanishes and this is the full KL
    idx_all = np.argsort(-t_logits, -1)
    full = np.array(
        topk_kl(mx.array(s), mx.array(idx_all), mx.array(np.take_along_axis(t_logits, idx_all, -1)),
                mx.array(lse), mode="tail")
    )  # fmt: skip
    np.testing.assert_allclose(full, (tp * (np.log(tp) - np.log(sp))).sum(-1), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="temperature 1"):
        topk_kl(mx.array(s), mx.array(idx), mx.array(val), mx.array(lse), 2.0, mode="tail")


class _Fixed:
    """A 'model' returning fixed logits, so the loss function is checked alone."""

    def __init__(self, logits):
        self.logits = mx.array(logits)

    def __call__(self, inputs):
        return self.logits


def test_sgt_weights_follow_eq2():
    rng = np.random.default_rng(3)
    B, T, V, k, lam = 2, 6, 20, 4, 0.7
    _, idx, val, lse = _teacher(rng, B, T, V, k)
    s = rng.normal(size=(B, T, V))
    resp = np.ones((B, T), bool)
    resp[:, :2] = False
    level = np.zeros((B, T), np.int8)
    level[0, [3, 5]] = 1  # row 1 has no GT: its weight is plain (λ acts only where GT exists)
    batch = to_mx(dict(inputs=np.zeros((B, T), np.int32), targets=np.zeros((B, T), np.int32),
                       response=resp, level=level, topk_idx=idx.astype(np.uint16),
                       topk_val=val.astype(np.float16), lse=lse.astype(np.float32)))  # fmt: skip
    loss, ntoks = make_kd_loss(lam=lam)(_Fixed(s), batch)
    per = np.array(topk_kl(mx.array(s), batch["topk_idx"], batch["topk_val"], batch["lse"]))
    row0 = lam * per[0, [3, 5]].mean() + (1 - lam) * per[0, 2:].mean()
    row1 = per[1, 2:].mean()
    want = (row0 * 4 + row1 * 4) / 8  # each row has 4 supervised positions
    assert int(ntoks.item()) == 8
    np.testing.assert_allclose(loss.item(), want, rtol=1e-3)
    plain, _ = make_kd_loss(lam=0.0)(_Fixed(s), batch)
    np.testing.assert_allclose(plain.item(), per[resp].mean(), rtol=1e-3)
