"""Contrastive refinement (paper §3.2.2 step 3): per-layer states, the distance, the ranking of a
decisive token on a constructed task, hit@k against a hand/hypergeometric reference."""

from math import comb

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest

from cherry_mlx.models.llama import Model, ModelArgs
from cherry_mlx.selection.refine import (
    contrastive_scores,
    draw_replacements,
    hit_at,
    layer_states,
    promote,
)


def _model(cfg):
    m = Model(ModelArgs.from_dict(cfg))
    mx.eval(m.parameters())
    return m


@pytest.mark.parametrize("recurrence", [None, {"prelude": 1, "core": 1, "coda": 1, "loops": 3}])
def test_layer_states_match_model_hidden(tiny_config, recurrence):
    if recurrence:
        tiny_config.update(num_hidden_layers=3, recurrence=recurrence)
    m = _model(tiny_config)
    x = mx.array(np.random.default_rng(0).integers(0, 256, size=(2, 11)))
    depth = len(m.model.schedule)
    # our own loop over the blocks, then the final norm, equals the model's forward pass
    ours = m.model.norm(layer_states(m, x, depth))
    assert mx.allclose(ours, m.hidden(x), atol=1e-5).item()
    assert mx.array_equal(layer_states(m, x, 0), m.model.embed_tokens(x)).item()


def test_uncorrupted_pair_has_zero_distance(tiny_config):
    m = _model(tiny_config)
    x = np.random.default_rng(1).integers(0, 256, size=12)
    pos = np.arange(1, 11)
    same = x[pos][:, None]  # "corrupting" with the token itself
    d = contrastive_scores(m, x, pos, same, layer=2)
    # zero up to fp32 rounding (the shared prefix comes from the KV cache, not a recomputation)
    np.testing.assert_allclose(d, 0.0, atol=1e-5)
    other = (x[pos][:, None] + 1) % 256
    assert (contrastive_scores(m, x, pos, other, layer=2) > 0).all()


def test_distance_matches_numpy_reference(tiny_config):
    m = _model(tiny_config)
    x = np.random.default_rng(2).integers(0, 256, size=9)
    pos, rep = np.array([3]), np.array([[7]])
    d = contrastive_scores(m, x, pos, rep, layer=1)
    y = x.copy()
    y[3] = 7
    h = np.array(layer_states(m, mx.array(np.stack([x, y])), 1))  # (2, T, D)
    ref = np.sqrt(((h[0, 4:] - h[1, 4:]) ** 2).sum(-1).mean())  # positions after t, RMS
    assert d[0] == pytest.approx(ref, rel=1e-4)


KEYS, FILL, SEP = np.arange(200, 216), np.arange(10, 60), 5


def _task(rng, n):
    """[6 tokens, one of them a key] SEP key: the answer depends on one decisive token."""
    x = rng.choice(FILL, size=(n, 8))
    kp = rng.integers(0, 6, size=n)
    keys = rng.choice(KEYS, size=n)
    x[np.arange(n), kp] = keys
    x[:, 6], x[:, 7] = SEP, keys
    return x, kp


def test_corrupted_decisive_token_ranks_first(tiny_config):
    m = Model(ModelArgs.from_dict(tiny_config))
    rng = np.random.default_rng(0)
    opt = optim.Adam(learning_rate=1e-2)

    def loss(model, x):
        return nn.losses.cross_entropy(model(x[:, :-1])[:, 5:], x[:, 6:]).mean()

    step = nn.value_and_grad(m, loss)
    for _ in range(120):
        lv, g = step(m, mx.array(_task(rng, 64)[0]))
        opt.update(m, g)
        mx.eval(m.parameters(), opt.state)
    assert lv.item() < 0.5  # the copy task is learned
    xs, kps = _task(rng, 10)
    first = 0
    for x, kp in zip(xs, kps):
        pos = np.arange(6)
        reps = np.array(
            [
                [rng.choice(KEYS[KEYS != x[p]]) if p == kp else rng.choice(FILL[FILL != x[p]])]
                for p in pos
            ]
        )
        d = contrastive_scores(m, x, pos, reps, layer=2)
        first += int(np.argmax(d) == kp)
    assert first >= 9, first


def test_hit_at_against_hand_and_hypergeometric():
    scores = np.array([0.1, 0.9, 0.3, 0.8, 0.2, 0.05, 0.7])
    gold = np.array([0, 0, 1, 0, 0, 0, 0], dtype=bool)
    r = hit_at(scores, gold, top=3)  # top-3 = positions 1, 3, 6: no gold
    assert r["hit"] == 0.0 and r["precision"] == 0.0
    r = hit_at(scores, gold, top=5)  # top-5 adds 2 and 4: gold at 2
    assert r["hit"] == 1.0 and r["precision"] == pytest.approx(1 / 5)
    assert r["random_hit"] == pytest.approx(1 - comb(6, 5) / comb(7, 5))
    assert r["random_precision"] == pytest.approx(1 / 7)


def test_promote_and_replacements():
    assert promote(np.array([1.0, 1.0, 5.0, 1.2]), tau=2.0).tolist() == [False, False, True, False]
    rng = np.random.default_rng(0)
    reps = draw_replacements([3, 4, 5], pool=[3, 4, 5, 6], k=4, rng=rng)
    assert reps.shape == (3, 4) and all(t not in row for t, row in zip([3, 4, 5], reps))
    with pytest.raises(ValueError, match="at least 2"):
        draw_replacements([1], pool=[1], k=1, rng=rng)


def test_refine_examples_end_to_end_promotes_spans_on_content():
    from cherry_mlx.models.loading import build_model, load_config, load_tokenizer, resolve
    from cherry_mlx.selection.refine import RefineConfig
    from cherry_mlx.selection.refine_data import refine_examples
    from cherry_mlx.selection.tagger import tag_examples

    tok = load_tokenizer("cherry-tiny")
    cfg = load_config(resolve("cherry-tiny"))
    cfg.update(num_hidden_layers=2)
    model = build_model(cfg)
    mx.eval(model.parameters())
    exs = tag_examples(
        [
            {
                "messages": [
                    {"role": "user", "content": "Capital of France?"},
                    {
                        "role": "assistant",
                        "content": "The capital of France is Paris. "
                        "It has been the capital for a very long time.",
                    },
                ]
            },
            {"prompt": "2 + 3?", "completion": "Adding them, 2 + 3 = 5. So the answer is 5."},
        ]
    )
    before = [len(exs[0]["messages"][1]["gt"]), len(exs[1]["gt"])]
    res = refine_examples(model, tok, exs, RefineConfig(layer=1, tau=0.0), log=lambda *a: None)
    s = res.summary
    assert s["examples"] == 2 and 0.0 <= s["hit"] <= 1.0 and s["layer"] == 1
    # tau 0 promotes every non-GT candidate with a positive score; spans stay valid on content
    assert res.promoted_spans > 0
    after = [len(exs[0]["messages"][1]["gt"]), len(exs[1]["gt"])]
    assert after != before
    for text, spans in (
        (exs[0]["messages"][1]["content"], exs[0]["messages"][1]["gt"]),
        (exs[1]["completion"], exs[1]["gt"]),
    ):
        for a, b in zip(spans, spans[1:]):
            assert a["end"] <= b["start"]
        assert all(0 <= sp["start"] < sp["end"] <= len(text) for sp in spans)
        assert any(sp["category"] == "reasoning" and sp["level"] == 1 for sp in spans)


def test_word_starts_hand_labelled():
    from cherry_mlx.data.encode import _special_ids, hf_tokenizer
    from cherry_mlx.models.loading import load_tokenizer
    from cherry_mlx.selection.refine_data import word_starts

    tok = hf_tokenizer(load_tokenizer("cherry-tiny"))
    text = "<|spartan_assistant|>The capital is Paris. 수도는 서울"
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    offs = np.asarray(enc["offset_mapping"])
    starts = word_starts(text, offs, enc["input_ids"], _special_ids(tok))
    words = {text[a:b].strip() for (a, b), s in zip(offs, starts) if s}
    # every word contributes exactly its first token; the special token and bare spaces none
    assert starts.sum() == len(text.split())  # "<|..|>The" is one whitespace-separated word
    assert "The" in words and "capital" in words and not any(w.startswith("<|") for w in words)
    assert text[offs[starts][-1][0] :].strip().startswith("서")
