"""Head training from the trunk's own generations: batched generation with states, the cache's
round trip and resume, the cached loss against the model's own forward pass, only the heads
learning, and the training form of the heads against a hand-written unrolled loop."""

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from cherry_mlx.decoding.batch import batch_generate_states
from cherry_mlx.decoding.generate import generate_tokens, prefill
from cherry_mlx.models import build_model
from cherry_mlx.models.mtp import set_draft_vocab
from cherry_mlx.training import mtp_cache
from cherry_mlx.training.mtp import HeadDistillLoss
from cherry_mlx.training.mtp_fit import FitConfig, draft_vocab_from, fit_heads, make_batch

PROMPTS = [[5, 9, 17, 3], [40, 2], [7, 7, 8, 100, 101, 102, 3], [11]]


@pytest.fixture
def trunk(tiny_config):
    model = build_model(tiny_config)
    mx.eval(model.parameters())
    return model


def test_batch_generation_is_plain_greedy_with_the_trunks_states(trunk):
    gens = batch_generate_states(trunk, PROMPTS, max_tokens=6)  # left-padded batch of 4
    for p, g in zip(PROMPTS, gens):
        assert g.prompt_len == len(p) and list(g.tokens[: len(p)]) == p
        assert list(g.tokens[len(p) :]) == list(generate_tokens(trunk, p, max_tokens=6))
        L = len(g.tokens)
        assert g.hidden.shape == (L - 1, 64) and g.hidden.dtype == np.float16
        h = prefill(trunk, mx.array(g.tokens[:-1]), trunk.make_cache())  # (1, L-1, D)
        np.testing.assert_allclose(g.hidden.astype(np.float32), np.array(h[0]), atol=2e-2)
        ref = np.array(mx.argmax(trunk.logits(h[0]), axis=-1))
        np.testing.assert_array_equal(g.greedy, ref)  # argmax next token at every position
        np.testing.assert_array_equal(g.greedy[len(p) - 1 :], g.tokens[len(p) :])


def test_batch_generation_stops_rows_at_a_stop_token(trunk):
    free = batch_generate_states(trunk, PROMPTS[:2], max_tokens=6)
    stop = int(free[0].tokens[len(PROMPTS[0]) + 1])  # row 0's second reply token
    gens = batch_generate_states(trunk, PROMPTS[:2], max_tokens=6, stop=[stop])
    assert gens[0].tokens[-1] == stop and len(gens[0].tokens) == len(PROMPTS[0]) + 2
    assert len(gens[0].hidden) == len(gens[0].tokens) - 1


def _gen(model):
    return lambda batch, index: batch_generate_states(model, batch, max_tokens=5)


def test_cache_round_trip_and_resume(trunk, tmp_path):
    calls = []

    def failing(batch, index):
        calls.append(len(batch))
        if len(calls) == 2:
            raise KeyboardInterrupt  # interrupted while generating the second shard
        return _gen(trunk)(batch, index)

    d = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        mtp_cache.build(d, PROMPTS, failing, "src", {"n": 5}, batch_size=2, log=lambda s: None)
    assert mtp_cache.summary(d)["sequences"] == 2  # the first shard survived
    calls.clear()
    m = mtp_cache.build(d, PROMPTS, lambda b, i: (calls.append(len(b)), _gen(trunk)(b, i))[1],
                        "src", {"n": 5}, batch_size=2, log=lambda s: None)  # fmt: skip
    assert calls == [2] and len(m["shards"]) == 2  # only the two prompts left were generated
    cached = {s.prompt_id: s for s in mtp_cache.iter_cache(d)}
    assert sorted(cached) == [0, 1, 2, 3]
    fresh = batch_generate_states(trunk, PROMPTS, max_tokens=5)
    for i, g in enumerate(fresh):
        c = cached[i]
        np.testing.assert_array_equal(c.tokens, g.tokens)
        np.testing.assert_array_equal(c.greedy, g.greedy)
        np.testing.assert_allclose(c.hidden.astype(np.float32), g.hidden.astype(np.float32),
                                   atol=2e-2)  # fmt: skip
        assert c.prompt_len == len(PROMPTS[i])
    with pytest.raises(ValueError, match="another model or settings"):
        mtp_cache.build(d, PROMPTS, _gen(trunk), "other", {"n": 5}, log=lambda s: None)


def test_cached_loss_matches_the_trunk_forward_and_only_heads_learn(tiny_config, tmp_path):
    model = build_model({**tiny_config, "mtp": {"num_heads": 2}})
    mx.eval(model.parameters())
    d = tmp_path / "cache"
    mtp_cache.build(d, PROMPTS, _gen(model), "src", {}, batch_size=4, log=lambda s: None)
    seqs = list(mtp_cache.iter_cache(d))
    ids = draft_vocab_from(seqs, 40, 256)
    set_draft_vocab(model, ids)
    b = make_batch(seqs, 64)
    loss_fn = HeadDistillLoss(feature_weight=0.5)
    cached = loss_fn.from_states(model, b["h0"], b["greedy"], b["inputs"], b["valid"])
    # reference: the trunk run on the same tokens (float32 states, its own argmax), one row at a
    # time, per-head losses pooled by their valid positions
    num = np.zeros(2)
    den = np.zeros(2)
    for s in seqs:
        x = mx.array(s.tokens[:-1])[None]
        h0 = model.hidden(x)
        g = mx.argmax(model.logits(h0), axis=-1)
        per = loss_fn.from_states(model, h0, g, x, mx.ones(x.shape, mx.bool_), per_head=True)
        for k, lk in enumerate(per, start=1):
            inside = np.isin(np.array(g[0, k:]), ids)  # positions the loss counts
            num[k - 1] += lk.item() * inside.sum()
            den[k - 1] += inside.sum()
    np.testing.assert_allclose(cached.item(), np.mean(num / den), rtol=2e-3)

    trunk = {k: np.array(v) for k, v in tree_flatten(model.model.parameters())}
    heads = {k: np.array(v) for k, v in tree_flatten(model.mtp.parameters())}
    cfg = FitConfig(heads=2, steps=25, batch_size=4, learning_rate=3e-3, warmup=2,
                    draft_vocab=40, valid_share=0.0, save_every=10)  # fmt: skip
    res = fit_heads(model, d, tmp_path / "state", cfg, log=lambda s: None)
    assert res["done"] and res["step"] == 25
    for k, v in tree_flatten(model.model.parameters()):
        np.testing.assert_array_equal(np.array(v), trunk[k])
    changed = [
        k for k, v in tree_flatten(model.mtp.parameters()) if not np.array_equal(v, heads[k])
    ]
    assert changed
    meta_losses = res["loss_last10"]
    assert meta_losses < cached.item()  # it learnt on the cached features


def test_fit_resumes_where_it_stopped(tiny_config, tmp_path):
    def run(steps_first):
        model = build_model({**tiny_config, "mtp": {"num_heads": 2}})
        mx.eval(model.parameters())
        d = tmp_path / "cache"
        if not d.exists():
            mtp_cache.build(d, PROMPTS, _gen(model), "src", {}, batch_size=4, log=lambda s: None)
        cfg = FitConfig(heads=2, steps=6, batch_size=2, warmup=2, draft_vocab=40, save_every=1,
                        compile=False)  # fmt: skip
        state = tmp_path / f"state{steps_first}"
        if steps_first:  # stop after ``steps_first`` steps, then a fresh process resumes
            r = fit_heads(model, d, state, cfg, stop_after=steps_first, log=lambda s: None)
            assert r["step"] == steps_first and not r["done"]
        return dict(tree_flatten(_resume(tiny_config, d, state, cfg).mtp.parameters()))

    a, b = run(0), run(3)
    for k in a:
        np.testing.assert_allclose(np.array(a[k]), np.array(b[k]), rtol=1e-5, atol=1e-6)


def _resume(tiny_config, d, state, cfg):
    mx.random.seed(0)
    model = build_model({**tiny_config, "mtp": {"num_heads": 2}})
    mx.eval(model.parameters())
    fit_heads(model, d, state, cfg, log=lambda s: None)
    return model


def test_training_form_is_the_unrolled_drafting_chain(tiny_config):
    """Training-time test: head k at position t reads head k-1's own state at t (not the trunk's
    state at t+k-1) and the token t+k. A hand-written loop, one position at a time with each
    head's KV cache, gives the same states as the training form."""
    model = build_model({**tiny_config, "mtp": {"num_heads": 3}})
    mx.eval(model.parameters())
    x = mx.array(np.random.default_rng(0).integers(0, 256, (1, 10)))
    h0 = model.hidden(x)  # (1, L, D)
    states = model.mtp.sequence_states(model, h0, x)
    emb = model.model.embed_tokens(x)
    L = x.shape[1]
    caches = model.mtp.make_cache()
    loop = [[] for _ in range(3)]
    for t in range(L):
        prev = h0[:, t : t + 1]
        for k, head in enumerate(model.mtp.heads, start=1):
            if t + k >= L:
                break
            prev = head(prev, emb[:, t + k : t + k + 1], cache=caches[k - 1])  # its own output
            loop[k - 1].append(prev)
    for k in range(3):
        np.testing.assert_allclose(np.array(states[k]), np.array(mx.concatenate(loop[k], 1)),
                                   rtol=1e-4, atol=1e-5)  # fmt: skip
