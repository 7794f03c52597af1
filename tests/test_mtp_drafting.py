"""Cheap drafting: reduced draft vocabulary, adaptive drafting, trunk-initialised heads, EAGLE's
feature regression in the one MTP loss, and the frequency-ranked draft vocabulary."""

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from cherry_mlx.data.frequency import top_tokens
from cherry_mlx.decoding.adaptive import AdaptiveDraft
from cherry_mlx.decoding.drafting import DraftScorer
from cherry_mlx.decoding.generate import GenerationStats, SamplingConfig, generate_tokens
from cherry_mlx.decoding.speculative import (
    MTPDrafter,
    head_acceptance,
    speculative_generate_tokens,
)
from cherry_mlx.models import build_model, load_model, save_model
from cherry_mlx.models.mtp import add_mtp_heads, init_heads_from_trunk, set_draft_vocab

PROMPT = [1, 5, 7, 9, 11, 3, 17]


def _model(cfg, k=3, **mtp):
    m = build_model({**cfg, "mtp": {"num_heads": k, **mtp}})
    mx.eval(m.parameters())
    return m


def _good_heads(model, branch_scale=0.1):
    """Near-bigram trunk and heads that copy it (tests/test_speculative.py's construction)."""
    d = model.args.hidden_size
    for layer in model.layers:
        layer.self_attn.o_proj.weight = layer.self_attn.o_proj.weight * branch_scale
        layer.mlp.down_proj.weight = layer.mlp.down_proj.weight * branch_scale
    for head in model.mtp.heads:
        head.proj.weight = mx.concatenate([mx.zeros((d, d)), mx.eye(d)], axis=1)
        head.block.self_attn.o_proj.weight = mx.zeros_like(head.block.self_attn.o_proj.weight)
        head.block.mlp.down_proj.weight = mx.zeros_like(head.block.mlp.down_proj.weight)
    mx.eval(model.parameters())


# -- reduced draft vocabulary ---------------------------------------------------------------------
@pytest.mark.parametrize("tied", [False, True])
def test_draft_scorer_is_the_lm_head_restricted_to_the_draft_vocab(tiny_config, tied):
    model = _model({**tiny_config, "tie_word_embeddings": tied})
    ids = sorted(np.random.default_rng(0).choice(256, 40, replace=False).tolist())
    set_draft_vocab(model, ids)
    scorer = DraftScorer(model)
    h = mx.random.normal((1, 64))
    W = np.array(model.model.embed_tokens.weight if tied else model.lm_head.weight)  # (V, D)
    ref = W[ids] @ np.array(h)[0]  # numpy reference over the N rows
    tok, q = scorer(h, SamplingConfig())
    assert q is None and int(tok.item()) == ids[int(np.argmax(ref))]
    tok, q = scorer(h, SamplingConfig(temp=1.0))
    q = np.exp(np.array(q[0], dtype=np.float64))
    expect = np.exp(ref - ref.max()) / np.exp(ref - ref.max()).sum()
    np.testing.assert_allclose(q[ids], expect, rtol=1e-4, atol=1e-7)
    assert q[np.setdiff1d(np.arange(256), ids)].max() == 0 and int(tok.item()) in ids


def test_reduced_vocab_keeps_greedy_output(tiny_config):
    """Greedy output equals plain greedy with any draft vocabulary. A draft vocabulary of every
    token drafts exactly what the full LM head drafts; one that misses the tokens the trunk
    emits drafts none of them right."""
    model = _model(tiny_config)
    _good_heads(model)
    plain = list(generate_tokens(model, PROMPT, max_tokens=40))

    def spec():
        stats = GenerationStats()
        out = speculative_generate_tokens(model, PROMPT, max_tokens=40, stats=stats, adaptive=False)
        assert list(out) == plain
        return stats

    full = spec()
    set_draft_vocab(model, list(range(256)))
    assert spec().accept_hist == full.accept_hist
    set_draft_vocab(model, sorted(set(plain + PROMPT + list(range(0, 256, 3)))))
    assert spec().accepted > 0
    set_draft_vocab(model, [t for t in range(256) if t not in plain][:60])
    assert spec().accepted == 0 < full.accepted


def test_reduced_vocab_sampling_matches_the_trunk_law(tiny_config):
    """Speculative sampling with a 4-of-8 draft vocabulary: the first two tokens follow the
    trunk's exact joint law (TV against its expected sampling noise)."""
    cfg = {**tiny_config, "vocab_size": 8, "hidden_size": 32, "intermediate_size": 64}
    cfg.update(num_attention_heads=2, num_key_value_heads=1)
    model = _model(cfg, k=2, draft_vocab=[0, 2, 5, 7])
    prompt = [1, 2, 3]
    p1 = np.array(mx.softmax(model(mx.array([prompt]))[0, -1]))
    p2 = np.array(mx.softmax(model(mx.array([prompt + [a] for a in range(8)]))[:, -1], axis=-1))
    joint = p1[:, None] * p2
    n, counts, stats = 800, np.zeros((8, 8)), GenerationStats()
    for i in range(n):
        out = list(
            speculative_generate_tokens(
                model, prompt, SamplingConfig(temp=1.0), 2, seed=i, stats=stats, adaptive=False
            )
        )
        counts[out[0], out[1]] += 1
    tv = 0.5 * np.abs(counts / n - joint).sum()
    noise = 0.5 * np.sqrt(2 / (np.pi * n)) * np.sqrt(joint * (1 - joint)).sum()
    assert tv < 1.6 * noise, (tv, noise)
    assert 0 < stats.accepted < stats.drafted


def test_draft_vocab_is_saved_with_the_model(tiny_config, tmp_path):
    model = _model(tiny_config, k=2)
    cfg = {**tiny_config, "mtp": set_draft_vocab(model, [9, 3, 3, 200])}
    save_model(model, tmp_path / "m", cfg)
    loaded, saved = load_model(tmp_path / "m")
    assert saved["mtp"]["draft_vocab"] == [3, 9, 200]
    assert DraftScorer(loaded).size == 3
    with pytest.raises(ValueError, match="0..255"):
        set_draft_vocab(model, [1, 256])


def test_top_tokens_counts_response_tokens():
    class Ex:
        def __init__(self, tokens, response):
            self.tokens, self.response = np.array(tokens), np.array(response, bool)

    data = [Ex([5, 5, 7, 9, 9, 9], [0, 1, 1, 1, 1, 1]), Ex([7, 1, 2], [1, 0, 0])]
    # response counts: 9 x3, 7 x2, 5 x1; then unseen ids in id order (0, 1, ...)
    assert top_tokens(data, 2, 16) == [7, 9]
    assert top_tokens(data, 4, 16) == [0, 5, 7, 9]
    with pytest.raises(ValueError, match="--mtp-draft-vocab 0"):
        top_tokens(data, 0, 16)


# -- adaptive drafting ----------------------------------------------------------------------------
def test_adaptive_expected_tokens_hand_computed():
    ctrl = AdaptiveDraft(3)
    ctrl.hits, ctrl.tries = [0, 3, 1, 0], [0, 3, 3, 0]  # α = 4/5, 2/5, 1/2
    assert ctrl.expected(0) == 1
    np.testing.assert_allclose(ctrl.expected(3), 1 + 0.8 + 0.8 * 0.4 + 0.8 * 0.4 * 0.5)


def test_adaptive_stops_drafting_when_nothing_is_accepted_and_probes_again():
    ctrl = AdaptiveDraft(3)
    assert ctrl.choose() == 3  # first round probes every head
    ctrl.update(3, 1, None)
    for _ in range(6):  # rounds cost 1.5 plain steps and accept nothing
        k = ctrl.choose()
        if k == 0:
            ctrl.update(0, ctrl.burst_len, 0.010 * ctrl.burst_len)
        else:
            ctrl.update(k, 1, 0.010 * (1 + 0.15 * k))
    decisions = [ctrl.choose()]
    ctrl.update(0, ctrl.burst_len, 0.010 * ctrl.burst_len)
    assert decisions == [0] and ctrl.burst_len == ctrl.probe_every
    assert ctrl.choose() >= 1  # after the burst: one probe round
    ctrl.update(1, 2, 0.0115)  # the probe was accepted: acceptance recovers gradually
    for _ in range(12):
        k = ctrl.choose()
        if k == 0:
            ctrl.update(0, ctrl.burst_len, 0.010 * ctrl.burst_len)
        else:
            ctrl.update(k, k + 1, 0.010 * (1 + 0.15 * k))
    assert ctrl.choose() == 3  # every draft accepted again: all heads draft


def test_adaptive_backs_off_probing_when_probes_keep_failing():
    """Heads that never pay: each failed probe doubles the plain burst before the next one, up to
    max_gap, so probing costs a vanishing share of a long generation (or a chat session)."""
    ctrl = AdaptiveDraft(2, max_gap=128)
    bursts = []
    for _ in range(40):
        k = ctrl.choose()
        if k == 0:
            bursts.append(ctrl.burst_len)
            ctrl.update(0, ctrl.burst_len, 0.010 * ctrl.burst_len)
        else:
            ctrl.update(k, 1, 0.015 + 0.002 * k)  # nothing accepted, a round costs 1.5+ steps
    probes = [b for b in bursts if b != ctrl.calibrate_len]
    assert probes[:4] == [32, 64, 128, 128], bursts
    assert sum(bursts) > 20 * (40 - len(bursts))  # plain tokens far outnumber probe rounds


def test_adaptive_prefers_fewer_heads_when_later_heads_fail():
    ctrl = AdaptiveDraft(3)
    ctrl.choose()
    for _ in range(30):  # head 1 always right, heads 2 and 3 always wrong; heads cost 30% each
        k = ctrl.choose()
        if k == 0:
            ctrl.update(0, ctrl.burst_len, 0.01 * ctrl.burst_len)
        else:
            ctrl.update(k, min(k, 1) + 1, 0.01 * (1 + 0.3 * k))
    assert ctrl.choose() == 1


class _Script(AdaptiveDraft):
    """A controller that follows a fixed plan (bursts and rounds), independent of timing."""

    def __init__(self, max_k, plan):
        super().__init__(max_k)
        self.plan, self.i = plan, 0

    def choose(self):
        k = self.plan[self.i % len(self.plan)]
        self.i += 1
        self._burst = 3
        return k


@pytest.mark.parametrize("kind", ["sequential", "cross"])
def test_bursts_and_partial_rounds_keep_greedy_exact_and_head_caches_right(tiny_config, kind):
    """Plain bursts, rounds with fewer heads and full rounds in any order: greedy output equals
    plain greedy, and (sequential) each head's cache still holds the training form's keys."""
    from mlx_lm.models.cache import KVCache

    from cherry_mlx.decoding.speculative import make_drafter

    model = _model(tiny_config, kind=kind)
    _good_heads(model, 0.3)
    plain = list(generate_tokens(model, PROMPT, max_tokens=40))
    drafter = make_drafter(model)
    stats = GenerationStats()
    ctrl = _Script(3, [3, 0, 1, 2, 0, 3, 3, 1])
    out = list(
        speculative_generate_tokens(
            model, PROMPT, max_tokens=40, stats=stats, drafter=drafter, adaptive=ctrl
        )
    )
    assert out == plain and set(stats.draft_hist) == {1, 2, 3}
    assert 0 < sum(head_acceptance(stats)) and all(0 <= a <= 1 for a in head_acceptance(stats))
    if kind == "cross":
        return
    x = mx.array(PROMPT + out)[None]
    L = x.shape[1]
    h, emb = model.hidden(x), model.model.embed_tokens(x)
    for k, head in enumerate(model.mtp.heads, start=1):
        c = drafter.caches[k - 1]
        n = min(drafter._c[k], L - k)
        fresh = KVCache()
        head(h[:, :n], emb[:, k : k + n], cache=fresh)
        np.testing.assert_allclose(
            np.array(c.keys[..., :n, :]), np.array(fresh.keys[..., :n, :]), atol=1e-4
        )
        h = head(h[:, : L - k], emb[:, k:])


def test_adaptive_default_keeps_greedy_and_penalty_output(tiny_config):
    model = _model(tiny_config)
    _good_heads(model)
    for cfg in (SamplingConfig(), SamplingConfig(repetition_penalty=1.3)):
        plain = list(generate_tokens(model, PROMPT, cfg, max_tokens=60))
        assert list(speculative_generate_tokens(model, PROMPT, cfg, max_tokens=60)) == plain


# -- training recipe ------------------------------------------------------------------------------
def test_trunk_initialised_head_is_the_last_layer_on_the_summed_inputs(tiny_config):
    """head(h, e) == trunk_final_norm(Block_last(RMSNorm(h) + RMSNorm(e))), computed by hand
    from the trunk's own modules (the head's attention then runs over its own positions)."""
    model = build_model(tiny_config)
    mx.eval(model.parameters())
    add_mtp_heads(model, 2)
    init_heads_from_trunk(model)
    h = mx.random.normal((1, 6, 64))
    e = mx.random.normal((1, 6, 64))

    def rms(x):
        return x * mx.rsqrt((x * x).mean(-1, keepdims=True) + 1e-5)

    ref = model.model.norm(model.layers[-1](rms(h) + rms(e), "causal"))
    got = model.mtp.heads[1](h, e)
    np.testing.assert_allclose(np.array(got), np.array(ref), atol=1e-5)
    names = [k for k, _ in tree_flatten(model.mtp.parameters())]
    assert len(names) == len(set(names))  # copies, not shared modules


def test_feature_regression_term_matches_numpy(tiny_config):
    """MTP loss with --mtp-feature-weight w adds w · smooth-L1(h_k, h0[t+k]) (mean over D, masked
    mean over shifted response positions) to each head's loss."""
    from cherry_mlx.training.mtp import mtp_loss

    model = _model(tiny_config, k=2)
    rng = np.random.default_rng(3)
    seq = rng.integers(0, 256, (2, 11))
    resp = rng.random((2, 10)) < 0.7
    batch = {
        "inputs": mx.array(seq[:, :-1]),
        "targets": mx.array(seq[:, 1:]),
        "response": mx.array(resp),
        "level": mx.zeros((2, 10), dtype=mx.int8),
        "category": mx.full((2, 10), -1, dtype=mx.int8),
    }
    plain, _ = mtp_loss(model, batch, beta=0.5, lam=0.0)
    with_f, _ = mtp_loss(model, batch, beta=0.5, lam=0.0, feature_weight=2.0)
    h0 = np.array(model.hidden(batch["inputs"]), dtype=np.float64)
    states = model.mtp.sequence_states(model, model.hidden(batch["inputs"]), batch["inputs"])
    feats = []
    for k, hk in enumerate(states, start=1):
        d = np.abs(np.array(hk, dtype=np.float64) - h0[:, k:])
        per = np.where(d < 1, 0.5 * d**2, d - 0.5).mean(-1)
        m = resp[:, k:]
        feats.append((per * m).sum() / m.sum())
    np.testing.assert_allclose(with_f.item() - plain.item(), 0.5 * 2.0 * np.mean(feats), rtol=1e-4)


@pytest.mark.slow
def test_train_adds_cross_heads_with_a_draft_vocab(tiny_config, tmp_path):
    """`train --mtp 2 --mtp-kind cross --mtp-draft-vocab 50 --freeze-trunk`: the checkpoint's
    config has the kind and the 50 most frequent response tokens of the data; the trunk is
    unchanged."""
    import json

    from cherry_mlx.models.runs import list_checkpoints
    from cherry_mlx.training import TrainConfig, train

    data = tmp_path / "data"
    data.mkdir()
    rows = [{"prompt": "What is 2+2?", "completion": "It is 4. " * (i + 1)} for i in range(4)]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "valid.jsonl").write_text(json.dumps(rows[0]) + "\n")
    cfg = TrainConfig(
        steps=1, name="h", runs_dir=str(tmp_path), data=str(data), seq_len=48, batch_size=2,
        demo=False, eval_every=1, save_every=1, warmup=0, mtp=2, mtp_kind="cross",
        mtp_draft_vocab=50, freeze_trunk=True,
    )  # fmt: skip
    model = build_model({**tiny_config, "vocab_size": 4096})
    mx.eval(model.parameters())
    trunk = np.array(model.layers[0].mlp.up_proj.weight)
    train(cfg, model=model)
    saved = json.loads((list_checkpoints(tmp_path / "h")[-1] / "config.json").read_text())
    assert saved["mtp"]["kind"] == "cross" and len(saved["mtp"]["draft_vocab"]) == 50
    assert model.mtp.kind == "cross"
    np.testing.assert_array_equal(np.array(model.layers[0].mlp.up_proj.weight), trunk)


def test_mtp_settings_are_validated():
    from cherry_mlx.training.config import TrainConfig

    with pytest.raises(ValueError, match="--mtp-kind 'tree'"):
        TrainConfig(mtp=2, mtp_kind="tree")
    with pytest.raises(ValueError, match="--mtp-draft-vocab N needs --mtp K"):
        TrainConfig(mtp_draft_vocab=100)
    with pytest.raises(ValueError, match="--mtp-init 'zero'"):
        TrainConfig(mtp=1, mtp_init="zero")
    assert TrainConfig(mtp=2, mtp_feature_weight=1.0, mtp_draft_vocab=512).mtp_draft_vocab == 512


def test_drafter_num_draft_with_draft_vocab(tiny_config):
    model = _model(tiny_config, k=3, draft_vocab=list(range(0, 256, 2)))
    assert MTPDrafter(model, 2).scorer.size == 128
