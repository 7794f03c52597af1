"""MTP heads: sequence (oracle) form, loss against a numpy reference, training, info, save/load."""

import json

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from _train_helpers import log_softmax, mtp_batch
from mlx.utils import tree_flatten

from cherry_mlx.evaluation.mtp import mtp_accuracy
from cherry_mlx.models import build_model, load_model, save_model
from cherry_mlx.models.mtp import add_mtp_heads, freeze_for_mtp
from cherry_mlx.selection.losses import sgt_loss
from cherry_mlx.training.mtp import mtp_loss


def test_head_states_shapes_and_param_names(tiny_config):
    model = build_model({**tiny_config, "mtp": {"num_heads": 3}})
    names = [k for k, _ in tree_flatten(model.parameters()) if k.startswith("mtp.")]
    assert "mtp.heads.2.proj.weight" in names
    assert "mtp.heads.0.block.self_attn.q_proj.weight" in names
    x = mx.random.randint(0, 256, (2, 10))
    h0 = model.hidden(x)
    states = model.mtp.sequence_states(model, h0, x)
    assert [s.shape for s in states] == [(2, 9, 64), (2, 8, 64), (2, 7, 64)]


def test_mtp_loss_matches_numpy_reference(tiny_config):
    model = build_model({**tiny_config, "mtp": {"num_heads": 2}})
    mx.eval(model.parameters())
    rng = np.random.default_rng(0)
    seq = rng.integers(0, 256, (2, 13))
    resp = rng.random((2, 12)) < 0.7
    batch = mtp_batch(seq[:, :-1], seq[:, 1:], resp)
    trunk, ntoks = sgt_loss(model, batch, lam=0.7)
    loss, n2 = mtp_loss(model, batch, beta=0.5, lam=0.7)
    # reference: head k at t sees (state_{k-1,t}, emb(inputs[t+k])) and targets[t+k]
    h = model.hidden(batch["inputs"])
    emb = model.model.embed_tokens(batch["inputs"])
    ref = []
    for k, head in enumerate(model.mtp.heads, start=1):
        h = head(h[:, :-1], emb[:, k:])
        lp = log_softmax(np.array(model.logits(h), dtype=np.float64))
        tgt = seq[:, 1:][:, k:]
        ce = -np.take_along_axis(lp, tgt[..., None], -1)[..., 0]
        ref.append((ce * resp[:, k:]).sum() / resp[:, k:].sum())
    expected = trunk.item() + 0.5 * np.mean(ref)
    np.testing.assert_allclose(loss.item(), expected, rtol=1e-5)
    assert n2.item() == ntoks.item() == resp.sum()


def test_head_attention_cached_equals_sequence(tiny_config):
    """The drafter runs heads incrementally with a KV cache; the training form runs them over the
    whole sequence with a causal mask. Both must give the same states."""
    model = build_model({**tiny_config, "mtp": {"num_heads": 1}})
    x = mx.random.randint(0, 256, (1, 9))
    h0 = model.hidden(x)
    full = model.mtp.sequence_states(model, h0, x)[0]  # (1, 8, D)
    head, cache = model.mtp.heads[0], model.mtp.make_cache()[0]
    emb = model.model.embed_tokens(x)
    parts = [head(h0[:, :3], emb[:, 1:4], cache=cache)]
    parts += [head(h0[:, t : t + 1], emb[:, t + 1 : t + 2], cache=cache) for t in range(3, 8)]
    np.testing.assert_allclose(np.array(mx.concatenate(parts, 1)), np.array(full), atol=1e-5)


def test_frozen_trunk_heads_learn_a_pattern(tiny_config):
    """Adding heads to an existing model and training only them (frozen trunk) on the sequence
    x_{t+1} = x_t + 3 (mod V): each head must then predict token t+k+1 on held-out data."""
    model = build_model(tiny_config)
    mx.eval(model.parameters())
    trunk_before = {k: np.array(v) for k, v in tree_flatten(model.model.parameters())}
    add_mtp_heads(model, 2)
    freeze_for_mtp(model)
    assert all(k.startswith("mtp.") for k, _ in tree_flatten(model.trainable_parameters()))

    def data(seed, B=8, T=24):
        start = np.random.default_rng(seed).integers(0, 256, (B, 1))
        seq = (start + 3 * np.arange(T + 1)) % 256
        return mtp_batch(seq[:, :-1], seq[:, 1:])

    opt = optim.Adam(learning_rate=3e-3)

    def loss_fn(m, b):
        return mtp_loss(m, b, beta=1.0, freeze_trunk=True)[0]

    step = nn.value_and_grad(model, loss_fn)
    for i in range(60):
        _, grads = step(model, data(i))
        opt.update(model, grads)
        mx.eval(model.parameters(), opt.state)
    acc = mtp_accuracy(model, [data(1000)])
    assert min(acc["heads"]) > 0.9, acc
    for k, v in tree_flatten(model.model.parameters()):
        np.testing.assert_array_equal(np.array(v), trunk_before[k])


def test_info_counts_head_parameters_and_roundtrip(tiny_config, tmp_path):
    from cherry_mlx.models.info import describe

    cfg = {**tiny_config, "mtp": {"num_heads": 3}}
    model = build_model(cfg)
    mx.eval(model.parameters())
    save_model(model, tmp_path / "m", cfg)
    d, f = 64, 128
    kv = 2 * (64 // 4)  # 2 kv heads of 16
    block = 2 * d * d + 2 * d * kv + 3 * d * f + 2 * d  # q,o + k,v + mlp + 2 norms
    per_head = 3 * d + 2 * d * d + block  # hnorm, enorm, norm + proj + block
    report = describe(str(tmp_path / "m"))
    assert report["parameters"]["mtp heads"] == 3 * per_head
    assert json.loads((tmp_path / "m" / "config.json").read_text())["mtp"] == {"num_heads": 3}
    loaded, _ = load_model(tmp_path / "m")
    x = mx.array([[3, 4, 5, 6]])
    a = model.mtp.sequence_states(model, model.hidden(x), x)[2]
    b = loaded.mtp.sequence_states(loaded, loaded.hidden(x), x)[2]
    np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-6)


def test_mtp_loss_wraps_the_trainers_sgt_loss(tiny_config):
    """MTPLoss around the trainer's SGTLoss (one trunk pass shared with the heads) equals the
    stand-alone mtp_loss, and β = 0 gives back the trunk loss exactly."""
    from cherry_mlx.selection.select import make_loss
    from cherry_mlx.training.mtp import MTPLoss

    model = build_model({**tiny_config, "mtp": {"num_heads": 3}})
    mx.eval(model.parameters())
    rng = np.random.default_rng(1)
    seq = rng.integers(0, 256, (3, 17))
    batch = mtp_batch(seq[:, :-1], seq[:, 1:], rng.random((3, 16)) < 0.8)
    batch["level"] = mx.array((rng.random((3, 16)) < 0.3).astype(np.int8))
    wrapped, n = MTPLoss(make_loss("gt", 0.7), beta=0.4)(model, batch)
    ref, n_ref = mtp_loss(model, batch, beta=0.4, lam=0.7)
    np.testing.assert_allclose(wrapped.item(), ref.item(), rtol=1e-5)
    trunk, _ = MTPLoss(make_loss("gt", 0.7), beta=0.0)(model, batch)
    np.testing.assert_allclose(
        trunk.item(), make_loss("gt", 0.7)(model, batch)[0].item(), rtol=1e-6
    )
    assert n.item() == n_ref.item()


def test_self_distilled_head_targets_are_the_trunks_greedy_tokens(tiny_config):
    from cherry_mlx.selection.select import make_loss
    from cherry_mlx.training.mtp import MTPLoss

    model = build_model({**tiny_config, "mtp": {"num_heads": 2}})
    mx.eval(model.parameters())
    seq = np.random.default_rng(2).integers(0, 256, (2, 11))
    batch = mtp_batch(seq[:, :-1], seq[:, 1:])
    base = make_loss("all", 0.0)
    loss = MTPLoss(base, beta=1.0, targets="trunk")(model, batch)[0].item()
    h = model.hidden(batch["inputs"])
    greedy = np.array(mx.argmax(model.logits(h), -1))  # (B, L): trunk's token t+1 at t
    emb = model.model.embed_tokens(batch["inputs"])
    ref = []
    for k, head in enumerate(model.mtp.heads, start=1):
        h = head(h[:, :-1], emb[:, k:])
        lp = log_softmax(np.array(model.logits(h), dtype=np.float64))
        ref.append(-np.take_along_axis(lp, greedy[:, k:, None], -1).mean())
    np.testing.assert_allclose(loss, base(model, batch)[0].item() + np.mean(ref), rtol=1e-5)
    acc = mtp_accuracy(model, [batch])
    assert len(acc["agree"]) == 2 and all(0 <= g <= 1 for g in acc["agree"])
