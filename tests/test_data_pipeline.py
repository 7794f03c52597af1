"""JSONL validation, chat-template-aware span-to-token mapping, and resumable batching."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
from _tokenizer_helpers import train_small
from transformers import AutoTokenizer

from cherry_mlx.data.batching import BatchIterator
from cherry_mlx.data.categories import CATEGORIES
from cherry_mlx.data.encode import (
    Encoded,
    Rendered,
    encode_dataset,
    encode_example,
    masks_from_offsets,
)
from cherry_mlx.data.jsonl import DataError, read_jsonl

FACT, REASON = CATEGORIES.index("factual"), CATEGORIES.index("reasoning")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return AutoTokenizer.from_pretrained(str(train_small(tmp_path_factory.mktemp("tok"))))


def _text(tok, ids) -> str:
    return tok.decode([int(i) for i in ids])


# ---------------------------------------------------------------------------------------- JSONL
def _write(tmp_path, lines):
    p = tmp_path / "d.jsonl"
    p.write_text(
        "\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines)
        + "\n",
        encoding="utf-8",
    )
    return p


GOOD = [
    {
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": "서울",
                "gt": [{"start": 0, "end": 2, "level": 2, "category": "factual"}],
            },
        ],
        "tools": [],
    },
    {
        "prompt": "p",
        "completion": "c",
        "gt": [{"start": 0, "end": 1, "level": 1, "category": "reasoning"}],
    },
    {"text": "plain"},
]


def test_read_jsonl_accepts_the_three_shapes(tmp_path):
    p = _write(tmp_path, GOOD[:1] + [""] + GOOD[1:])  # a blank line is skipped
    assert read_jsonl(p) == GOOD


@pytest.mark.parametrize(
    "bad, field",
    [
        ("{not json", "(line)"),
        ({"messages": [{"role": "user", "content": "q"}]}, "messages"),  # no assistant turn
        ({"messages": [{"role": "robot", "content": "q"}]}, "messages[0].role"),
        ({"prompt": "p"}, "completion"),
        ({"text": "ab", "prompt": "p", "completion": "c"}, "(keys)"),
        (
            {"text": "abc", "gt": [{"start": 1, "end": 9, "level": 1, "category": "factual"}]},
            "gt[0].start/end",
        ),
        (
            {"text": "abc", "gt": [{"start": 0, "end": 1, "level": 4, "category": "factual"}]},
            "gt[0].level",
        ),
        (
            {"text": "abc", "gt": [{"start": 0, "end": 1, "level": 1, "category": "trivia"}]},
            "gt[0].category",
        ),
        ({"text": "abc", "gt": [{"start": 0, "end": 1, "level": 1}]}, "gt[0].category"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": "q",
                        "gt": [{"start": 0, "end": 1, "level": 1, "category": "factual"}],
                    },
                    {"role": "assistant", "content": "a"},
                ]
            },
            "messages[0].gt",
        ),
        ({"messages": [{"role": "assistant", "content": 5}]}, "messages[0].content"),
    ],
)
def test_malformed_line_names_file_line_and_field(tmp_path, bad, field):
    p = _write(tmp_path, [GOOD[2], GOOD[2], bad])
    with pytest.raises(DataError) as err:
        read_jsonl(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}:3: field {field}:"), msg
    assert "; " in msg  # and says how to fix it
    assert isinstance(err.value, ValueError)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="data build"):
        read_jsonl(tmp_path / "nope.jsonl")


# ----------------------------------------------------------------------------- span -> token map
def test_masks_from_offsets_by_hand():
    # tokens cover [0,3) [3,5) [5,9) [9,10); response is chars [3, 10); spans: a level-1 span over
    # chars 4..6 (tokens 1, 2) and a level-3 span over char 7 (token 2 only)
    offsets = np.array([[0, 3], [3, 5], [5, 9], [9, 10]])
    r = Rendered("x" * 10, [(3, 10, False)], [(4, 6, 1, FACT), (7, 8, 3, REASON)])
    resp, level, cat = masks_from_offsets(offsets, r, np.arange(4), set())
    assert resp.tolist() == [False, True, True, True]
    assert level.tolist() == [0, 1, 3, 0]  # the highest level wins, with its category
    assert cat.tolist() == [-1, FACT, REASON, -1]


def test_korean_span_to_tokens(tok):
    content = "수도는 서울입니다."
    gt = [{"start": 4, "end": 6, "level": 2, "category": "factual"}]  # "서울"
    assert content[4:6] == "서울"
    ex = {
        "messages": [
            {"role": "user", "content": "대한민국의 수도는?"},
            {"role": "assistant", "content": content, "gt": gt},
        ]
    }
    e = encode_example(ex, tok)
    pieces = tok.convert_ids_to_tokens(e.tokens.tolist())
    # hand-checked: the assistant content is 수|도|는|▁|서|울|입|니다|. and then the end of turn
    start = pieces.index("<|spartan_assistant|>") + 1
    want = ["수", "도", "는", "▁", "서", "울", "입", "니다", ".", "<|spartan_end|>"]
    assert pieces[start:] == want
    assert not e.response[:start].any() and e.response[start:].all()
    assert e.level.tolist()[start:] == [0, 0, 0, 0, 2, 2, 0, 0, 0, 0]
    assert e.category.tolist()[start:] == [-1, -1, -1, -1, FACT, FACT, -1, -1, -1, -1]
    assert (e.level[:start] == 0).all()


def test_english_multi_turn_all_assistant_turns_supervised(tok):
    ex = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 12 plus 30?"},
            {
                "role": "assistant",
                "content": "The answer is 42.",
                "gt": [{"start": 14, "end": 16, "level": 2, "category": "reasoning"}],
            },
            {"role": "user", "content": "Why?"},
            {
                "role": "assistant",
                "content": "Because the sum is so.",
                "gt": [{"start": 12, "end": 15, "level": 1, "category": "reasoning"}],
            },
        ]
    }
    e = encode_example(ex, tok)
    resp_text = _text(tok, e.tokens[e.response])
    assert resp_text == ("The answer is 42.<|spartan_end|>Because the sum is so.<|spartan_end|>")
    gt_pieces = tok.convert_ids_to_tokens(e.tokens[e.level > 0].tolist())
    # hand-checked: digits are split; "sum" is cut as "▁su"|"m", and the piece "▁su" overlaps the
    # span (its space is outside it) so it is GT as a whole
    assert gt_pieces == ["4", "2", "▁su", "m"]
    assert e.level[e.level > 0].tolist() == [2, 2, 1, 1]
    assert (e.category[e.level > 0] == REASON).all()
    # prompt side: system and user text are never response
    prompt_text = _text(tok, e.tokens[~e.response])
    assert "Be brief." in prompt_text and "What is 12 plus 30?" in prompt_text


def test_tool_calls_and_results(tok):
    ex = {
        "tools": [{"type": "function", "function": {"name": "calc"}}],
        "messages": [
            {"role": "user", "content": "2+2?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "calc", "arguments": {"e": "2+2"}}}],
            },
            {"role": "tool", "content": "4"},
            {"role": "assistant", "content": "It is 4."},
        ],
    }
    e = encode_example(ex, tok)
    assert _text(tok, e.tokens[e.response]) == (
        '<|spartan_tool|>{"name": "calc", "arguments": {"e": "2+2"}}<|spartan_tool_end|>'
        "<|spartan_end|>It is 4.<|spartan_end|>"
    )


def test_prompt_completion_and_text(tok):
    e = encode_example(
        {
            "prompt": "Q: capital?",
            "completion": "Seoul",
            "gt": [{"start": 0, "end": 5, "level": 1, "category": "factual"}],
        },
        tok,
    )
    assert _text(tok, e.tokens[e.response]) == "Seoul<|spartan_end|>"
    assert _text(tok, e.tokens[e.level > 0]) == "Seoul"
    e = encode_example({"text": "봄이 왔다."}, tok)
    assert e.tokens[0] == tok.bos_token_id and e.tokens[-1] == tok.eos_token_id
    assert e.response.tolist() == [False] + [True] * (len(e) - 1)


def _chatml_tokenizer():
    """A hub-style tokenizer that is not ours: byte-level BPE with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    t.train_from_iterator(["the answer is seoul, the capital", "hello world"] * 50, trainer)
    template = (
        "{% for m in messages %}{{ '<|im_start|>' + m.role + '\n' + m.content + "
        "'<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=t, chat_template=template, eos_token="<|im_end|>"
    )


def test_any_hf_tokenizer_chatml():
    tok = _chatml_tokenizer()
    ex = {
        "messages": [
            {"role": "user", "content": "hello"},
            {
                "role": "assistant",
                "content": "the answer is seoul",
                "gt": [{"start": 14, "end": 19, "level": 1, "category": "factual"}],
            },
        ]
    }
    e = encode_example(ex, tok)
    # the turn's content and its <|im_end|> are response; the header and the newline after not
    assert _text(tok, e.tokens[e.response]) == "the answer is seoul<|im_end|>"
    assert _text(tok, e.tokens[e.level > 0]).strip() == "seoul"


def test_truncate_or_drop_with_counts(tok):
    long = {"prompt": "p", "completion": "word " * 200}
    short = {"prompt": "p", "completion": "ok"}
    prompt_only = {"prompt": "x " * 100, "completion": "y"}
    enc, st = encode_dataset([long, short, prompt_only], tok, max_len=32)
    assert st.examples == 3 and st.truncated == 2 and st.dropped_no_response == 1
    assert [len(e) for e in enc] == [33, len(enc[1])] and enc[0].truncated
    enc, st = encode_dataset([long, short], tok, max_len=32, on_overflow="drop")
    assert st.dropped_too_long == 1 and len(enc) == 1


def test_dataset_stats_count_gt_share(tok):
    ex = {
        "prompt": "q",
        "completion": "ab cd",
        "gt": [{"start": 0, "end": 2, "level": 1, "category": "structural"}],
    }
    enc, st = encode_dataset([ex], tok, max_len=64)
    e = enc[0]
    resp = e.response[1:]
    assert st.response_tokens == int(resp.sum())
    assert st.gt_tokens == int((e.level[1:][resp] > 0).sum()) == st.category_tokens["structural"]
    assert 0 < st.gt_ratio < 1


# ------------------------------------------------------------------------------------- batching
def _fake(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        L = int(rng.integers(3, 40))
        toks = rng.integers(25, 300, size=L).astype(np.int32)
        resp = np.zeros(L, bool)
        resp[L // 2 :] = True
        lev = np.where(resp & (rng.random(L) < 0.3), 1, 0).astype(np.int8)
        out.append(Encoded(toks, resp, lev, np.where(lev > 0, 2, -1).astype(np.int8)))
    return out


def _np(batch):
    return {k: np.array(v) for k, v in batch.items()}


def test_batches_align_with_targets():
    enc = _fake(10)
    it = BatchIterator(enc, batch_size=4, max_len=32, seed=1, shuffle=False, loop=False)
    b = _np(next(it))
    assert set(b) == {"inputs", "targets", "response", "level", "category"}
    assert b["inputs"].dtype == np.int32 and b["level"].dtype == np.int8
    assert b["response"].dtype == np.bool_
    for row in range(4):
        e = enc[row]
        n = min(len(e), 33) - 1
        assert (b["inputs"][row, :n] == e.tokens[:n]).all()
        assert (b["targets"][row, :n] == e.tokens[1 : n + 1]).all()
        assert (b["response"][row, :n] == e.response[1 : n + 1]).all()
        assert (b["level"][row, :n] == e.level[1 : n + 1]).all()
        assert not b["response"][row, n:].any()  # padding is never supervised
    assert b["inputs"].shape[1] % 16 == 0 or b["inputs"].shape[1] == 32


def test_resume_gives_the_same_batches():
    enc = _fake(23)
    for bucket in (False, True):
        ref = BatchIterator(enc, 4, 32, seed=7, bucket=bucket, bucket_windows=3)
        seen = [_np(next(ref)) for _ in range(9)]
        state = json.loads(json.dumps(ref.state_dict()))  # survives a checkpoint round trip
        want = [_np(next(ref)) for _ in range(15)]  # crosses epoch boundaries
        resumed = BatchIterator(enc, 4, 32, seed=7, bucket=bucket, bucket_windows=3)
        resumed.load_state_dict(state)
        got = [_np(next(resumed)) for _ in range(15)]
        for w, g in zip(want, got):
            for k in w:
                assert np.array_equal(w[k], g[k])
        assert not all(np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(seen, want[:9]))
    with pytest.raises(ValueError, match="same data"):
        BatchIterator(enc[:5], 4, 32, seed=7).load_state_dict(state)


def test_one_pass_sees_every_example_once_and_epochs_reshuffle():
    enc = _fake(10)
    firsts = sorted(int(e.tokens[0]) for e in enc)
    it = BatchIterator(enc, 3, 64, seed=0, shuffle=True, loop=False)
    rows = [r for b in it for r in np.array(b["inputs"])[:, 0].tolist()]
    assert len(rows) == 10 and sorted(rows) == firsts and len(it) == 4
    loop = BatchIterator(enc, 5, 64, seed=0)
    e0 = [r for _ in range(2) for r in np.array(next(loop)["inputs"])[:, 0].tolist()]
    e1 = [r for _ in range(2) for r in np.array(next(loop)["inputs"])[:, 0].tolist()]
    assert sorted(e0) == sorted(e1) == firsts and e0 != e1


def test_bucketing_reduces_padding():
    enc = _fake(64, seed=3)

    def padding(bucket):
        it = BatchIterator(enc, 8, 64, seed=0, loop=False, bucket=bucket, pad_multiple=1)
        return sum(int((~np.array(b["response"])).sum()) for b in it)

    assert padding(True) < padding(False)


def test_fixed_length_and_mx_arrays():
    it = BatchIterator(_fake(4), 2, 48, fixed_length=True)
    b = next(it)
    assert isinstance(b["inputs"], mx.array) and b["inputs"].shape == (2, 48)


def test_mlx_lm_wrapper_encodes_like_the_hf_tokenizer(tok):
    from pathlib import Path

    from mlx_lm.utils import load_tokenizer

    wrapper = load_tokenizer(Path(tok.name_or_path))
    ex = {
        "messages": [
            {"role": "user", "content": "질문"},
            {"role": "assistant", "content": "답은 42입니다."},
        ]
    }
    a, b = encode_example(ex, tok), encode_example(ex, wrapper)
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.response, b.response)
