"""Heads distilled from a frozen trunk (``--freeze-trunk --mtp-targets trunk``): the loss against a
numpy reference over the reduced draft vocabulary, and only the heads learning."""

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from _train_helpers import log_softmax, mtp_batch
from mlx.utils import tree_flatten

from cherry_mlx.evaluation.mtp import mtp_accuracy
from cherry_mlx.models import build_model
from cherry_mlx.models.mtp import draft_rows, freeze_for_mtp, set_draft_vocab
from cherry_mlx.training.config import TrainConfig
from cherry_mlx.training.mtp import HeadDistillLoss, context_mask
from cherry_mlx.training.objective import make_objective


def _batch(rng, B=2, T=12, prompt=3, pad=2):
    """Prompt, response, then padding (response False) at the end of the first row."""
    seq = rng.integers(0, 256, (B, T + 1))
    resp = np.zeros((B, T), bool)
    resp[:, prompt:] = True
    resp[0, T - pad :] = False
    return mtp_batch(seq[:, :-1], seq[:, 1:], resp)


def test_context_mask_covers_prompt_and_response_not_padding():
    resp = np.array([[0, 0, 1, 1, 0, 0], [0, 1, 0, 1, 1, 1]], bool)
    want = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    np.testing.assert_array_equal(np.array(context_mask(mx.array(resp))), want)


@pytest.mark.parametrize("tied,vocab", [(False, True), (True, True), (True, False)])
def test_head_distill_loss_matches_numpy(tiny_config, tied, vocab):
    model = build_model({**tiny_config, "tie_word_embeddings": tied, "mtp": {"num_heads": 2}})
    mx.eval(model.parameters())
    rng = np.random.default_rng(0)
    batch = _batch(rng)
    h0 = model.hidden(batch["inputs"])
    greedy = np.array(mx.argmax(model.logits(h0), -1))  # (B, L): trunk's token t+1 at t
    ids = sorted(set(rng.choice(256, 60, replace=False).tolist()) | set(greedy[0, :4].tolist()))
    if vocab:
        set_draft_vocab(model, ids)
    W = np.array(model.model.embed_tokens.weight if tied else model.lm_head.weight)  # (V, D)
    if vocab:
        np.testing.assert_allclose(np.array(draft_rows(model, mx.array(ids))), W[ids])
    valid = np.array(context_mask(batch["response"]))
    fw = 0.5
    loss, ntoks = HeadDistillLoss(feature_weight=fw)(model, batch)
    states = model.mtp.sequence_states(model, h0, batch["inputs"])
    ref = []
    for k, hk in enumerate(states, start=1):
        h = np.array(hk, dtype=np.float64)  # (B, L-k, D)
        tgt, m = greedy[:, k:], valid[:, k:].copy()
        rows = W[ids] if vocab else W
        lp = log_softmax(h @ rows.T.astype(np.float64))
        if vocab:
            pos = {t: i for i, t in enumerate(ids)}
            inside = np.vectorize(lambda t: t in pos)(tgt)
            m &= inside
            tgt = np.vectorize(lambda t: pos.get(t, 0))(tgt)
        ce = -np.take_along_axis(lp, tgt[..., None], -1)[..., 0]
        d = np.abs(h - np.array(h0[:, k:], dtype=np.float64))
        sl1 = np.where(d < 1, 0.5 * d**2, d - 0.5).mean(-1)  # smooth-L1, beta 1
        ref.append((ce * m).sum() / m.sum() + fw * (sl1 * m).sum() / m.sum())
    np.testing.assert_allclose(loss.item(), np.mean(ref), rtol=1e-5)
    assert ntoks.item() == valid.sum() == 2 * 12 - 2


def test_frozen_trunk_objective_trains_only_the_heads_toward_the_trunk(tiny_config):
    cfg = TrainConfig(mtp=2, freeze_trunk=True, mtp_targets="trunk")
    loss_fn = make_objective(cfg)
    assert isinstance(loss_fn, HeadDistillLoss)
    model = build_model({**tiny_config, "mtp": {"num_heads": 2}})
    mx.eval(model.parameters())
    set_draft_vocab(model, list(range(0, 256, 2)) + [1, 3])
    freeze_for_mtp(model)
    trunk = {k: np.array(v) for k, v in tree_flatten(model.model.parameters())}
    batch = _batch(np.random.default_rng(1), B=4, T=16)
    opt = optim.Adam(learning_rate=3e-3)
    grad = nn.value_and_grad(model, lambda m, b: loss_fn(m, b)[0])
    before = mtp_accuracy(model, [batch])["agree"]
    first = None
    for _ in range(60):
        loss, g = grad(model, batch)
        assert all(k.startswith("mtp.") for k, _ in tree_flatten(g))
        opt.update(model, g)
        mx.eval(model.parameters(), opt.state)
        first = loss.item() if first is None else first
    assert loss.item() < 0.5 * first
    for k, v in tree_flatten(model.model.parameters()):
        np.testing.assert_array_equal(np.array(v), trunk[k])
    after = mtp_accuracy(model, [batch])["agree"]
    assert after[0] > before[0] + 0.3, (before, after)
