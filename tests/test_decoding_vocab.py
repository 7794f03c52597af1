"""A model whose vocabulary is larger than its tokenizer (a randomly initialised preset with a
small tokenizer, a padded embedding) never emits an id the tokenizer cannot decode, on the plain
and the speculative path, greedy and sampled."""

import mlx.core as mx
import numpy as np
import pytest

from cherry_mlx.decoding.chat import ChatConfig, ChatSession
from cherry_mlx.decoding.drafting import DraftScorer
from cherry_mlx.decoding.generate import SamplingConfig, target_logprobs
from cherry_mlx.decoding.session import generate_text
from cherry_mlx.models import build_model, load_tokenizer, save_model
from cherry_mlx.models.loading import WEIGHTS_DIR
from cherry_mlx.models.mtp import set_draft_vocab

TOKENIZER_DIR = WEIGHTS_DIR / "cherry-tiny"


@pytest.fixture
def padded(tiny_config, tmp_path):
    """Vocabulary 8192 over a 4096-token tokenizer; the LM head's rows below 4096 are zero, so
    an unmasked argmax (and nearly all sampled mass) lands on ids the tokenizer lacks."""
    cfg = {**tiny_config, "vocab_size": 8192, "mtp": {"num_heads": 2}}
    model = build_model(cfg)
    w = model.lm_head.weight
    model.lm_head.weight = mx.concatenate([mx.zeros_like(w[:4096]), 4 * w[4096:]])
    mx.eval(model.parameters())
    path = save_model(model, tmp_path / "m", cfg, tokenizer_dir=TOKENIZER_DIR)
    tok = load_tokenizer(path)
    assert len(tok) == 4096 < model.args.vocab_size
    return model, tok


@pytest.mark.parametrize("speculative", [False, True])
@pytest.mark.parametrize("temp", [0.0, 1.0])
def test_generate_and_chat_stay_inside_the_tokenizer(padded, speculative, temp):
    model, tok = padded
    sampling = SamplingConfig(temp=temp)
    text = "".join(p for p, _ in generate_text(model, tok, "hello", sampling, max_tokens=10,
                                               speculative=speculative, seed=1))  # fmt: skip
    assert text  # decoded, not an IndexError inside the detokenizer
    s = ChatSession(model, tok, ChatConfig(max_tokens=10, speculative=speculative, seed=1,
                                           sampling=sampling))  # fmt: skip
    assert "".join(s.send("hi"))
    assert s.last_tokens and max(s.last_tokens) < len(tok)


def test_logprobs_and_reduced_draft_vocabulary_mask_by_id(padded):
    model, _ = padded
    logits = mx.array(np.random.default_rng(0).normal(size=(1, 8192)), mx.float32)
    for cfg in (SamplingConfig(vocab_limit=4096), SamplingConfig(temp=0.7, vocab_limit=4096)):
        lp = np.array(target_logprobs(logits, None, cfg))
        assert np.all(np.isneginf(lp[0, 4096:]))
        assert np.isclose(np.exp(lp[0, :4096]).sum(), 1.0, atol=1e-4)
    # draft ids on both sides of the limit: the mask goes by id, not by position in the list
    ids = list(range(4000, 4200))
    set_draft_vocab(model, ids)
    scorer = DraftScorer(model)
    h = mx.array(np.random.default_rng(1).normal(size=(1, 64)), mx.float32)
    ref = np.array(h @ scorer.w)[0]  # (N,) scores of the draft ids
    best = ids[int(np.argmax(np.where(np.array(ids) < 4096, ref, -np.inf)))]
    tok, _ = scorer(h, SamplingConfig(vocab_limit=4096))
    assert int(tok.item()) == best
    _, q = scorer(h, SamplingConfig(temp=1.0, vocab_limit=4096))
    q = np.exp(np.array(q[0]))
    assert q[4096:].sum() == 0 and np.isclose(q[4000:4096].sum(), 1.0, atol=1e-4)
