"""Cross-attention MTP heads (--mtp-kind cross): shapes, causality by perturbation, the cached
drafting form against the training form, the one MTP loss, and exact speculative decoding."""

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from cherry_mlx.decoding.drafting import CrossDrafter
from cherry_mlx.decoding.generate import GenerationStats, generate_tokens
from cherry_mlx.decoding.speculative import MTPDrafter, speculative_generate_tokens
from cherry_mlx.models import build_model, load_model, save_model
from cherry_mlx.models.mtp import add_mtp_heads, init_heads_from_trunk

PROMPT = [1, 5, 7, 9, 11, 3, 17]


def _model(cfg, kind="cross", k=3):
    m = build_model({**cfg, "mtp": {"num_heads": k, "kind": kind}})
    mx.eval(m.parameters())
    return m


def test_cross_heads_shapes_names_and_roundtrip(tiny_config, tmp_path):
    model = _model(tiny_config)
    names = {k for k, _ in tree_flatten(model.parameters()) if k.startswith("mtp.")}
    assert "mtp.heads.2.block.self_attn.k_proj.weight" in names
    assert "mtp.heads.0.block.memory_norm.weight" in names
    x = mx.random.randint(0, 256, (2, 10))
    states = model.mtp.sequence_states(model, model.hidden(x), x)
    assert [s.shape for s in states] == [(2, 9, 64), (2, 8, 64), (2, 7, 64)]
    save_model(model, tmp_path / "m", {**tiny_config, "mtp": model.args.mtp})
    loaded, cfg = load_model(tmp_path / "m")
    assert cfg["mtp"]["kind"] == "cross" and loaded.mtp.kind == "cross"
    again = loaded.mtp.sequence_states(loaded, loaded.hidden(x), x)
    np.testing.assert_allclose(np.array(again[2]), np.array(states[2]), atol=1e-6)


@pytest.mark.parametrize("kind", ["cross", "sequential"])
def test_a_head_never_sees_past_its_allowed_position(tiny_config, kind):
    """Head k's state at position t may depend on tokens 0..t+k only (trunk states 0..t and the
    fed token t+k): perturbing a later token leaves it unchanged, perturbing token t+k moves it."""
    model = _model(tiny_config, kind)
    rng = np.random.default_rng(0)
    L, t = 14, 5
    base = rng.integers(0, 256, (1, L))
    ref = model.mtp.sequence_states(model, model.hidden(mx.array(base)), mx.array(base))
    for k, hk in enumerate(ref, start=1):
        later = base.copy()
        later[0, t + k + 1 :] = (
            later[0, t + k + 1 :] + 1 + rng.integers(0, 200, L - t - k - 1)
        ) % 256
        x = mx.array(later)
        got = model.mtp.sequence_states(model, model.hidden(x), x)[k - 1]
        np.testing.assert_allclose(np.array(got[0, : t + 1]), np.array(hk[0, : t + 1]), atol=1e-5)
        moved = base.copy()
        moved[0, t + k] = (moved[0, t + k] + 1) % 256
        x = mx.array(moved)
        got = model.mtp.sequence_states(model, model.hidden(x), x)[k - 1]
        assert np.abs(np.array(got[0, t]) - np.array(hk[0, t])).max() > 1e-4


def test_cross_attention_reads_only_earlier_trunk_states(tiny_config):
    """Directly on the trunk states: changing h0 at positions > t leaves head 1 at t unchanged."""
    model = _model(tiny_config, k=1)
    x = mx.random.randint(0, 256, (1, 12))
    h0 = model.hidden(x)
    ref = model.mtp.sequence_states(model, h0, x)[0]
    noise = mx.concatenate([mx.zeros((1, 7, 64)), mx.random.normal((1, 5, 64))], axis=1)
    got = model.mtp.sequence_states(model, h0 + noise, x)[0]
    np.testing.assert_allclose(np.array(got[0, :7]), np.array(ref[0, :7]), atol=1e-5)
    assert np.abs(np.array(got[0, 7:]) - np.array(ref[0, 7:])).max() > 1e-3


def test_cached_cross_drafting_equals_the_training_form(tiny_config):
    """One query at a time against a KV cache of trunk states fed in chunks gives the training
    form's states at every position."""
    model = _model(tiny_config, k=1)
    x = mx.random.randint(0, 256, (1, 11))
    h0 = model.hidden(x)
    full = model.mtp.sequence_states(model, h0, x)[0]  # (1, 10, D)
    head, emb = model.mtp.heads[0], model.model.embed_tokens(x)
    from mlx_lm.models.cache import KVCache

    cache, fed, out = KVCache(), 0, []
    for t, chunk_end in [(3, 4), (4, 5), (7, 8), (8, 9), (9, 10)]:
        mem = h0[:, fed:chunk_end]
        fed = chunk_end
        out.append((t, head(h0[:, t : t + 1], emb[:, t + 1 : t + 2], mem, offset=t, cache=cache)))
    for t, h in out:
        np.testing.assert_allclose(np.array(h[0, 0]), np.array(full[0, t]), atol=1e-5)


@pytest.mark.parametrize("adaptive", [False, True])
def test_greedy_speculative_with_cross_heads_equals_plain(tiny_config, adaptive):
    model = _model(tiny_config)
    plain = list(generate_tokens(model, PROMPT, max_tokens=40))
    stats = GenerationStats()
    out = speculative_generate_tokens(model, PROMPT, max_tokens=40, stats=stats, adaptive=adaptive)
    assert list(out) == plain
    assert stats.rounds > 0


def test_cross_heads_start_from_the_trunk_and_drafter_kinds(tiny_config):
    """Trunk initialisation copies the last layer into the cross block (its input norm also
    normalises the memory); each kind gets its own drafter, the other refuses clearly."""
    model = build_model(tiny_config)
    mx.eval(model.parameters())
    add_mtp_heads(model, 2, "cross")
    init_heads_from_trunk(model)
    last = dict(tree_flatten(model.layers[-1].parameters()))
    block = dict(tree_flatten(model.mtp.heads[1].block.parameters()))
    for name in ("self_attn.q_proj.weight", "mlp.down_proj.weight", "input_layernorm.weight"):
        np.testing.assert_array_equal(np.array(block[name]), np.array(last[name]))
    np.testing.assert_array_equal(
        np.array(block["memory_norm.weight"]), np.array(last["input_layernorm.weight"])
    )
    assert CrossDrafter(model).K == 2
    with pytest.raises(ValueError, match="sequential heads"):
        MTPDrafter(model)


def test_one_mtp_loss_trains_cross_heads(tiny_config):
    """The one MTP loss (frozen trunk) teaches cross heads x_{t+1} = x_t + 3 (mod V)."""
    import mlx.nn as nn
    import mlx.optimizers as optim

    from cherry_mlx.evaluation.mtp import mtp_accuracy
    from cherry_mlx.models.mtp import freeze_for_mtp
    from cherry_mlx.training.mtp import mtp_loss

    model = build_model(tiny_config)
    mx.eval(model.parameters())
    add_mtp_heads(model, 2, "cross")
    freeze_for_mtp(model)

    def data(seed, B=8, T=24):
        start = np.random.default_rng(seed).integers(0, 256, (B, 1))
        seq = (start + 3 * np.arange(T + 1)) % 256
        return {
            "inputs": mx.array(seq[:, :-1]),
            "targets": mx.array(seq[:, 1:]),
            "response": mx.ones((B, T), dtype=mx.bool_),
            "level": mx.zeros((B, T), dtype=mx.int8),
            "category": mx.full((B, T), -1, dtype=mx.int8),
        }

    opt = optim.Adam(learning_rate=3e-3)
    step = nn.value_and_grad(model, lambda m, b: mtp_loss(m, b, beta=1.0, freeze_trunk=True)[0])
    for i in range(60):
        _, grads = step(model, data(i))
        opt.update(model, grads)
        mx.eval(model.parameters(), opt.state)
    assert min(mtp_accuracy(model, [data(1000)])["heads"]) > 0.9
