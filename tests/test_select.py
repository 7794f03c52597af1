"""SGT loss and selection controls against numpy: Eq. 2 per example, equal supervised counts."""

import mlx.core as mx
import numpy as np
import pytest

from cherry_mlx.models import build_model
from cherry_mlx.selection.losses import full_loss, sgt_loss
from cherry_mlx.selection.select import make_loss, select_mask
from cherry_mlx.training.config import TrainConfig
from cherry_mlx.training.data import prepare_batch


def _batch(seed=0, B=3, T=12, V=256, gt_rate=0.3):
    r = np.random.default_rng(seed)
    resp = np.zeros((B, T), bool)
    resp[:, 4:] = True
    resp[1, 10:] = False  # padding at the end of row 1
    level = ((r.random((B, T)) < gt_rate) & resp).astype(np.int8)
    level[2] = 0  # row 2 has no GT: Eq. 2 falls back to L_full
    level[0, 5] = 2
    cat = np.where(level > 0, r.integers(0, 6, (B, T)), -1).astype(np.int8)
    toks = r.integers(0, V, (B, T + 1)).astype(np.int32)
    return dict(inputs=toks[:, :-1], targets=toks[:, 1:], response=resp, level=level, category=cat)


def _mx(b):
    return {k: mx.array(v) for k, v in b.items()}


def _np_ce(logits, targets):
    logits = np.asarray(logits, np.float64)
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    return lse - np.take_along_axis(logits, targets[..., None], -1)[..., 0]


def _np_sgt(ce, resp, gt, lam):
    """Eq. 2 per example, response-token-weighted mean over examples (losses.py contract)."""
    num, den = 0.0, 0.0
    for b in range(ce.shape[0]):
        r, g = resp[b], gt[b] & resp[b]
        l_full = ce[b][r].mean()
        l_b = lam * ce[b][g].mean() + (1 - lam) * l_full if g.any() else l_full
        num += l_b * r.sum()
        den += r.sum()
    return num / den


@pytest.fixture
def model(tiny_config):
    m = build_model(tiny_config)
    mx.eval(m.parameters())
    return m


def test_mixed_loss_equals_full_ce_when_every_token_is_gt(model):
    b = _batch()
    b["level"] = b["response"].astype(np.int8)
    ce = _np_ce(np.array(model(mx.array(b["inputs"]))), b["targets"])
    ref = ce[b["response"]].mean()
    for lam in (0.0, 0.7, 1.0):
        loss, n = sgt_loss(model, _mx(b), lam)
        assert abs(loss.item() - ref) < 1e-5
        assert n.item() == b["response"].sum()
    assert abs(full_loss(model, _mx(b))[0].item() - ref) < 1e-5


@pytest.mark.parametrize("lam", [0.0, 0.7, 1.0])
def test_mixed_loss_matches_hand_computation(model, lam):
    b = _batch(seed=1)
    ce = _np_ce(np.array(model(mx.array(b["inputs"]))), b["targets"])
    ref = _np_sgt(ce, b["response"], b["level"] >= 1, lam)
    loss_fn = make_loss("gt", lam)
    assert abs(loss_fn(model, _mx(b))[0].item() - ref) < 1e-5
    # logits only at the needed positions (padded bucket) give the same loss
    prepared, _ = prepare_batch(b, loss_fn)
    assert prepared["pos"].shape[0] >= int(loss_fn.needed(b).sum())
    assert abs(loss_fn(model, prepared)[0].item() - ref) < 1e-5


def test_tiny_hand_example():
    """Two examples, logits chosen by hand: the loss is the arithmetic of Eq. 2 (no model)."""

    class Fixed:
        def __call__(self, inputs):
            return mx.array(logits)

    logits = np.zeros((2, 3, 2), np.float32)
    logits[0, :, 0] = [np.log(3.0), 0.0, 0.0]  # p(target 0) = 3/4, 1/2, 1/2
    targets = np.zeros((2, 3), np.int32)
    resp = np.array([[1, 1, 1], [0, 1, 1]], bool)
    level = np.array([[1, 0, 0], [0, 0, 0]], np.int8)
    b = dict(
        inputs=targets,
        targets=targets,
        response=resp,
        level=level,
        category=np.where(level > 0, 0, -1).astype(np.int8),
    )
    l1, l2 = -np.log(0.75), np.log(2.0)
    # example 0: 0.7*l1 + 0.3*mean(l1, l2, l2); example 1 (no GT): l2; weights 3 and 2 tokens
    ex0 = 0.7 * l1 + 0.3 * (l1 + 2 * l2) / 3
    expected = (3 * ex0 + 2 * l2) / 5
    loss, n = make_loss("gt", 0.7)(Fixed(), _mx(b))
    assert n.item() == 5
    assert abs(loss.item() - expected) < 1e-6


def test_level_and_category_filters(model):
    b = _batch(seed=2)
    ce = _np_ce(np.array(model(mx.array(b["inputs"]))), b["targets"])
    gt = (b["level"] >= 2) & np.isin(b["category"], [0, 2])
    ref = _np_sgt(ce, b["response"], gt, 0.7)
    loss_fn = make_loss("gt", 0.7, level="super", categories=["factual", "reasoning"])
    assert abs(loss_fn(model, _mx(b))[0].item() - ref) < 1e-5


@pytest.mark.parametrize("select", ["random", "loss", "rho1"])
def test_selection_picks_as_many_positions_as_gt(select):
    b = _batch(seed=3, B=4, T=40)
    r = np.random.default_rng(9)
    ce = r.random(b["targets"].shape).astype(np.float32)
    ref_ce = r.random(b["targets"].shape).astype(np.float32)
    mb = _mx(b)
    mb["ref_ce"] = mx.array(ref_ce)
    gt = mb["response"] & (mb["level"] >= 1)
    mask = np.array(select_mask(select, mb, gt, ce=mx.array(ce), key=mx.random.key(1)))
    k = (b["response"] & (b["level"] >= 1)).sum(1)
    np.testing.assert_array_equal(mask.sum(1), k)  # per example, hence per batch
    assert not (mask & ~b["response"]).any()
    if select != "random":
        score = ce if select == "loss" else ce - ref_ce
        for row in range(mask.shape[0]):
            cand = np.flatnonzero(b["response"][row])
            top = cand[np.argsort(-score[row, cand])[: k[row]]]
            assert set(np.flatnonzero(mask[row])) == set(top)


def test_random_selection_depends_on_key_and_all_is_full_loss(model):
    b = _batch(seed=4, B=3, T=60, gt_rate=0.2)
    mb = _mx(b)
    gt = mb["response"] & (mb["level"] >= 1)
    m1 = np.array(select_mask("random", mb, gt, key=mx.random.key(1)))
    m2 = np.array(select_mask("random", mb, gt, key=mx.random.key(2)))
    assert (m1 != m2).any()
    np.testing.assert_array_equal(np.array(select_mask("all", mb, gt)), b["response"])
    full = full_loss(model, mb)[0].item()
    assert abs(make_loss("all", 0.7)(model, mb)[0].item() - full) < 1e-5


def test_config_validation_messages():
    with pytest.raises(ValueError, match="--select"):
        TrainConfig(select="best")
    with pytest.raises(ValueError, match="--reference"):
        TrainConfig(select="rho1")
    with pytest.raises(ValueError, match="--categories"):
        TrainConfig(categories="factual,nonsense")
    with pytest.warns(UserWarning, match="pure GT"):
        TrainConfig(lam=1.0)
    assert TrainConfig(categories="factual, guardrail").categories == ["factual", "guardrail"]
