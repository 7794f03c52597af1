"""Self-speculative decoding: exactness against plain decoding, cache trimming, sampling law."""

import mlx.core as mx
import numpy as np
import pytest

from cherry_mlx.decoding.generate import GenerationStats, SamplingConfig, generate_tokens
from cherry_mlx.decoding.speculative import accept_sampled, speculative_generate_tokens
from cherry_mlx.models import build_model

PROMPT = [1, 5, 7, 9, 11, 3, 17]


def _model(cfg, **extra):
    m = build_model({**cfg, "mtp": {"num_heads": 3}, **extra})
    mx.eval(m.parameters())
    return m


def _near_bigram(model, branch_scale=0.1):
    """Shrink every block's residual branches: the trunk's next token then depends mostly on the
    current token, with a little context (so drafts are often, not always, right)."""
    for layer in model.layers:
        layer.self_attn.o_proj.weight = layer.self_attn.o_proj.weight * branch_scale
        layer.mlp.down_proj.weight = layer.mlp.down_proj.weight * branch_scale


def _copy_heads(model):
    """Heads that predict like a bigram trunk: output = norm(emb(token t+k)), block = identity."""
    d = model.args.hidden_size
    for head in model.mtp.heads:
        head.proj.weight = mx.concatenate([mx.zeros((d, d)), mx.eye(d)], axis=1)  # take emb half
        head.block.self_attn.o_proj.weight = mx.zeros_like(head.block.self_attn.o_proj.weight)
        head.block.mlp.down_proj.weight = mx.zeros_like(head.block.mlp.down_proj.weight)
    mx.eval(model.parameters())


def _merged(cfg):
    from cherry_mlx.compression.merge import merge_model

    big = {**cfg, "num_hidden_layers": 4, "mtp": {"num_heads": 3}}
    m = build_model(big)
    mx.eval(m.parameters())
    merged, _ = merge_model(m, big, [[0, 1], [2, 3]])
    mx.eval(merged.parameters())
    return merged


KINDS = ["dense", "merged", "looped"]


def _kind(cfg, kind):
    if kind == "dense":
        return _model(cfg)
    if kind == "merged":
        return _merged(cfg)
    looped = {
        **cfg,
        "num_hidden_layers": 3,
        "recurrence": {"prelude": 1, "core": 1, "coda": 1, "loops": 3},
    }
    return _model(looped)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("good_heads", [False, True])
def test_greedy_speculative_equals_plain(tiny_config, kind, good_heads):
    model = _kind(tiny_config, kind)
    if good_heads:
        _near_bigram(model)
        _copy_heads(model)
    plain = list(generate_tokens(model, PROMPT, max_tokens=48))
    stats = GenerationStats()
    spec = list(
        speculative_generate_tokens(model, PROMPT, max_tokens=48, stats=stats, adaptive=False)
    )
    assert spec == plain
    assert stats.rounds > 0
    if good_heads:  # copy heads on a near-bigram trunk: most drafts are right
        assert stats.mean_accepted > 2.0, stats.summary()
    else:
        assert stats.accepted < stats.drafted  # random heads: some rejections exercised trimming


def test_greedy_with_repetition_penalty_and_stop(tiny_config):
    model = _model(tiny_config)
    _near_bigram(model)
    _copy_heads(model)
    cfg = SamplingConfig(repetition_penalty=1.3)
    plain = list(generate_tokens(model, PROMPT, cfg, max_tokens=40))
    stop = [plain[20]]
    plain_stop = list(generate_tokens(model, PROMPT, cfg, max_tokens=40, stop=stop))
    assert list(speculative_generate_tokens(model, PROMPT, cfg, max_tokens=40)) == plain
    assert list(speculative_generate_tokens(model, PROMPT, cfg, 40, stop=stop)) == plain_stop


@pytest.mark.parametrize("kind", ["dense", "looped"])
def test_trimmed_cache_equals_fresh_prefill(tiny_config, kind):
    """After speculative decoding the trunk caches hold exactly the committed tokens' keys and
    values: equal to a fresh prefill of those tokens, and the next step's logits agree."""
    model = _kind(tiny_config, kind)
    cache = model.make_cache()
    out = list(speculative_generate_tokens(model, PROMPT, max_tokens=20, cache=cache))
    kept = PROMPT + out[:-1]  # the last token is emitted but not yet fed
    fresh = model.make_cache()
    model(mx.array(kept)[None], cache=fresh)
    for c, f in zip(cache, fresh):
        assert c.offset == f.offset == len(kept)
        k, v = c.keys[..., : c.offset, :], c.values[..., : c.offset, :]
        np.testing.assert_allclose(np.array(k), np.array(f.keys[..., : f.offset, :]), atol=1e-4)
        np.testing.assert_allclose(np.array(v), np.array(f.values[..., : f.offset, :]), atol=1e-4)
    nxt = mx.array([[out[-1]]])
    np.testing.assert_allclose(
        np.array(model(nxt, cache=cache)), np.array(model(nxt, cache=fresh)), atol=1e-4
    )


def test_accept_sampled_reproduces_target_distribution():
    """The accept/resample rule alone: with a fixed draft law q and target p, the first emitted
    token is distributed as p[0] (Leviathan et al., Theorem 1), checked by total variation."""
    rng = np.random.default_rng(0)
    V, n = 6, 20000
    p = rng.dirichlet(np.ones(V), size=2)
    q = rng.dirichlet(np.ones(V) * 0.5, size=1)
    counts = np.zeros(V)
    for _ in range(n):
        d = np.array([rng.choice(V, p=q[0])])
        a, tok = accept_sampled(d, p, q, rng)
        counts[d[0] if a == 1 else tok] += 1
    tv = 0.5 * np.abs(counts / n - p[0]).sum()
    assert tv < 0.02, (counts / n, p[0])


def test_speculative_sampling_matches_plain_distribution(tiny_config):
    """End to end on a 8-token vocabulary: the joint law of the first two generated tokens under
    speculative sampling equals the trunk's exact law p(x1) p(x2 | x1) (TV and chi-square)."""
    cfg = {
        **tiny_config,
        "vocab_size": 8,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
    }
    model = _model(cfg)
    for head in model.mtp.heads:  # sharpen the heads so q differs clearly from p
        head.norm.weight = head.norm.weight * 4.0
    sc = SamplingConfig(temp=1.0)
    prompt = [1, 2, 3]
    p1 = mx.softmax(model(mx.array([prompt]))[0, -1]).tolist()
    joint = np.zeros((8, 8))
    seqs = mx.array([prompt + [a] for a in range(8)])
    p2 = np.array(mx.softmax(model(seqs)[:, -1], axis=-1))
    joint = np.array(p1)[:, None] * p2  # exact law of (x1, x2)
    n = 1000
    counts = np.zeros((8, 8))
    stats = GenerationStats()
    for i in range(n):
        out = list(
            speculative_generate_tokens(
                model, prompt, sc, max_tokens=2, seed=i, stats=stats, adaptive=False
            )
        )
        counts[out[0], out[1]] += 1
    emp = counts / n
    tv = 0.5 * np.abs(emp - joint).sum()
    noise = 0.5 * np.sqrt(2 / (np.pi * n)) * np.sqrt(joint * (1 - joint)).sum()  # E[TV] if exact
    assert tv < 1.6 * noise, (tv, noise)
    mask = joint * n >= 5
    chi2 = (((counts - n * joint) ** 2) / (n * joint))[mask].sum()
    assert chi2 < mask.sum() + 4 * np.sqrt(2 * mask.sum()), chi2  # mean df, 4 sigma
    assert 0 < stats.accepted < stats.drafted  # both branches of the rule were taken


@pytest.mark.parametrize("good_heads", [False, True])
def test_head_caches_hold_the_oracle_states(tiny_config, good_heads):
    """After decoding with rejections, head k's cache holds exactly the keys/values that the
    training (oracle) form computes over the committed tokens: the drafter's bookkeeping of which
    head entries were built from rejected drafts is right."""
    from mlx_lm.models.cache import KVCache

    from cherry_mlx.decoding.speculative import MTPDrafter

    model = _model(tiny_config)
    if good_heads:
        _near_bigram(model, 0.3)
        _copy_heads(model)
    drafter = MTPDrafter(model)
    stats = GenerationStats()
    out = list(
        speculative_generate_tokens(
            model, PROMPT, max_tokens=30, drafter=drafter, stats=stats, adaptive=False
        )
    )
    assert stats.accepted < stats.drafted and (stats.accepted > 0 or not good_heads)
    x = mx.array(PROMPT + out)[None]
    L = x.shape[1]
    h, emb = model.hidden(x), model.model.embed_tokens(x)
    for k, head in enumerate(model.mtp.heads, start=1):
        c = drafter.caches[k - 1]
        assert c.offset == drafter._c[k] >= L - 1 - k - 3  # at most a round's positions missing
        n = min(drafter._c[k], L - k)  # (the last round may hold tokens past max_tokens)
        fresh = KVCache()
        head(h[:, :n], emb[:, k : k + n], cache=fresh)
        np.testing.assert_allclose(
            np.array(c.keys[..., :n, :]), np.array(fresh.keys[..., :n, :]), atol=1e-4
        )
        h = head(h[:, : L - k], emb[:, k:])  # oracle states of head k for the next head


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_plain_greedy_matches_mlx_lm(tiny_config, penalty):
    """Our plain decoding against an independent reference: mlx-lm's generate_step."""
    import importlib

    from mlx_lm.sample_utils import make_logits_processors

    gen_mod = importlib.import_module("mlx_lm.generate")
    model = _model(tiny_config)
    ref = [
        int(t)
        for t, _ in gen_mod.generate_step(
            mx.array(PROMPT),
            model,
            max_tokens=32,
            logits_processors=make_logits_processors(repetition_penalty=penalty),
        )
    ]
    ours = list(generate_tokens(model, PROMPT, SamplingConfig(repetition_penalty=penalty), 32))
    assert ours == ref


@pytest.mark.parametrize("granularity", ["model", "layer"])
def test_greedy_speculative_on_fused_moee(tiny_config, granularity):
    """The fusion engineer's MoEE models (shared embedding, MTP heads) decode through the same
    functions: speculative greedy == plain greedy."""
    from cherry_mlx.fusion.assemble import assemble

    experts = [build_model(tiny_config) for _ in range(2)]
    mx.eval([e.parameters() for e in experts])
    fused, _ = assemble(experts, [tiny_config] * 2, granularity, top_k=1, shared=True, mtp_heads=2)
    mx.eval(fused.parameters())
    plain = list(generate_tokens(fused, PROMPT, max_tokens=24))
    assert list(speculative_generate_tokens(fused, PROMPT, max_tokens=24)) == plain


def test_num_draft_must_name_existing_heads(tiny_config):
    """--num-draft beyond the model's heads (or < 1) is a clear error, not silently clamped
    (5 on a 3-head model drafted 3) or misread (-1 sliced heads[:-1], 0 meant all)."""
    from cherry_mlx.decoding.speculative import MTPDrafter

    model = _model(tiny_config)
    assert MTPDrafter(model).K == 3 and MTPDrafter(model, 2).K == 2
    for bad in (0, -1, 4):
        with pytest.raises(ValueError, match=rf"--num-draft {bad}: the model has 3 MTP heads"):
            MTPDrafter(model, bad)
