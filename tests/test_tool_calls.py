"""GT spans on tool calls: the canonical call text, validation, span -> token mapping between the
template's tool markers, the bundled generator's calls, and the tagger on ``tool_calls``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _tokenizer_helpers import train_small
from transformers import AutoTokenizer

from cherry_mlx.data.categories import CATEGORIES
from cherry_mlx.data.encode import encode_dataset, encode_example, render_example
from cherry_mlx.data.jsonl import (
    DataError,
    assistant_pieces,
    example_texts,
    read_jsonl,
    tool_call_text,
)

STRUCT, VERIF, FACT = (CATEGORIES.index(c) for c in ("structural", "verification", "factual"))


def S(start, end, level, category):
    return {"start": start, "end": end, "level": level, "category": category}


# {"name": "calc", "arguments": {"e": "2+2"}}
# 0         1         2         3         4
# 0123456789012345678901234567890123456789012
CALL_GT = [
    S(2, 6, 1, "structural"),  # name
    S(10, 14, 2, "verification"),  # calc
    S(18, 27, 1, "structural"),  # arguments
    S(32, 33, 1, "structural"),  # e
    S(37, 40, 1, "structural"),  # 2+2
    S(41, 43, 1, "structural"),  # }}
]


def _call(args=None, gt=CALL_GT):
    tc = {"type": "function", "function": {"name": "calc", "arguments": args or {"e": "2+2"}}}
    return dict(tc, gt=gt) if gt is not None else tc


def _example(call, content=""):
    return {
        "tools": [{"type": "function", "function": {"name": "calc"}}],
        "messages": [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": content, "tool_calls": [call]},
            {"role": "tool", "content": "4"},
            {"role": "assistant", "content": "It is 4."},
        ],
    }


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return AutoTokenizer.from_pretrained(str(train_small(tmp_path_factory.mktemp("tok"))))


# --------------------------------------------------------------------------- canonical call text
def test_call_text_is_what_the_template_renders_between_the_markers(tok):
    text = tool_call_text(_call())
    assert text == '{"name": "calc", "arguments": {"e": "2+2"}}'
    assert [text[s["start"] : s["end"]] for s in CALL_GT] == [
        "name",
        "calc",
        "arguments",
        "e",
        "2+2",
        "}}",
    ]
    rendered = render_example(_example(_call()), tok).text
    assert f"<|spartan_tool|>{text}<|spartan_tool_end|>" in rendered
    assert '"gt"' not in rendered  # the spans never reach the model's input
    # OpenAI-style string arguments are inserted as they are; the flat form (no "function") too
    flat = {"name": "calc", "arguments": '{"e": "2+2"}'}
    assert tool_call_text(flat) == text
    assert f"<|spartan_tool|>{text}<|spartan_tool_end|>" in render_example(_example(flat), tok).text
    # non-ASCII stays as it is (transformers' tojson: ensure_ascii=False)
    ko = _call({"label": "기상"}, gt=None)
    assert json.loads(tool_call_text(ko))["arguments"]["label"] == "기상"
    assert "기상" in tool_call_text(ko)
    # tokenizer training sees the call as rendered, without its spans
    texts = list(example_texts(_example(_call())))
    assert text in texts and not any('"gt"' in t for t in texts)


# ------------------------------------------------------------------------------- span -> tokens
def test_call_tokens_between_the_markers_are_response_with_hand_checked_levels(tok):
    e = encode_example(_example(_call()), tok)
    pieces = tok.convert_ids_to_tokens(e.tokens.tolist())
    a, b = pieces.index("<|spartan_tool|>"), pieces.index("<|spartan_tool_end|>")
    # hand-checked on the test tokenizer: the call between the markers, then the end of turn
    assert pieces[a + 1 : b] == (
        ["{", '"', "name", '"', ":", '▁"', "c", "al", "c", '",', '▁"', "ar", "gument", "s"]
        + ['"', ":", "▁", "{", '"', "e", '"', ":", '▁"', "2", "+", "2", '"', "}", "}"]
    )
    assert pieces[b + 1] == "<|spartan_end|>"
    assert e.response[a : b + 2].all()  # both markers and the end of turn are supervised
    assert not e.response[:a].any()  # the header, tools list and user turn are context
    levels = [0, 0, 1, 0, 0, 0, 2, 2, 2, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0, 1, 1]
    cats = [STRUCT if v == 1 else VERIF if v == 2 else -1 for v in levels]
    assert e.level[a + 1 : b].tolist() == levels
    assert e.category[a + 1 : b].tolist() == cats
    assert e.level[a] == e.level[b] == e.level[b + 1] == 0  # the markers carry no span
    # the answer turn after the tool result is response too, the result itself is not
    r = pieces.index("<|spartan_tool_result|>")
    assert not e.response[r : r + 3].any() and e.response[r + 4 :].all()


def test_content_and_call_in_one_turn_and_string_arguments(tok):
    flat = {"name": "calc", "arguments": '{"e": "2+2"}', "gt": CALL_GT}
    ex = _example(flat, content="Checking.")
    ex["messages"][1]["gt"] = [S(0, 8, 1, "verification")]
    e = encode_example(ex, tok)
    text = tok.decode(e.tokens[(e.level > 0)].tolist())
    assert text == "Checkingnamecalcargumentse2+2}}"
    ids = e.tokens.tolist()
    on = lambda s: tok.decode([i for i, lv in zip(ids, e.level.tolist()) if lv == s])  # noqa: E731
    assert on(2) == "calc"
    r = render_example(ex, tok)
    assert (r.spans_unmapped, len(r.spans)) == (0, 7)


def _chatml_tokenizer(call_format: str, fail_prefix: bool = False):
    """A hub-style byte-level BPE tokenizer with ChatML turns and <tool_call> markers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    t.train_from_iterator(['{"name": "calc", "arguments": {"e": "2+2"}}'] * 50, trainer)
    template = (
        ("{% if add_generation_prompt %}{{ raise_exception('no prefix') }}{% endif %}")
        * fail_prefix
        + "{% for m in messages %}{{ '<|im_start|>' + m.role + '\n' + (m.content or '') }}"
        "{% for tc in m.tool_calls or [] %}{{ '<tool_call>' + " + call_format + " + "
        "'</tool_call>' }}{% endfor %}{{ '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=t, chat_template=template, eos_token="<|im_end|>"
    )


QWEN_STYLE = (
    '\'{"name": "\' + tc.function.name + \'", "arguments": \' + '
    "(tc.function.arguments | tojson) + '}'"
)


@pytest.mark.parametrize("fail_prefix", [False, True])
def test_other_templates_that_render_the_same_json(fail_prefix):
    """A Qwen-style template renders the same canonical text; with a template whose prefix cannot
    be rendered the turn is found by the call text and the end-of-call special is added."""
    tok = _chatml_tokenizer(QWEN_STYLE, fail_prefix)
    e = encode_example(_example(_call()), tok)
    pieces = tok.convert_ids_to_tokens(e.tokens.tolist())
    a, b = pieces.index("<tool_call>"), pieces.index("</tool_call>")
    gt = tok.decode([int(t) for t in e.tokens[e.level > 0]])
    # byte-level BPE merges quotes into neighbouring pieces ('"}}'): a piece overlapping a span is
    # GT as a whole, so only the quotes may come along
    assert gt.replace('"', "") == "namecalcargumentse2+2}}"
    assert e.response[a + 1 : b + 1].all()
    assert e.response[a] == (not fail_prefix)  # the fallback starts at the call text itself
    _, stats = encode_dataset([_example(_call())], tok, max_len=512)
    assert (stats.spans, stats.spans_unmapped, stats.turns_unlocated) == (6, 0, 0)


def test_a_differently_rendered_call_counts_its_spans_as_unmapped():
    tok = _chatml_tokenizer("tc.function.name + '(' + (tc.function.arguments | tojson) + ')'")
    enc, stats = encode_dataset([_example(_call())], tok, max_len=512)
    assert (stats.spans, stats.spans_unmapped) == (6, 6) and "WARNING" in stats.summary()
    assert not (enc[0].level > 0).any()  # never misplaced
    assert enc[0].response.any()  # the turn itself is still supervised


# ------------------------------------------------------------------------------------ validation
def _write(tmp_path, lines):
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", "utf-8")
    return p


def _with(**change):
    tc = _call()
    fn = dict(tc["function"])
    for k in ("name", "arguments"):
        if k in change:
            fn[k] = change.pop(k)
    tc = {**tc, "function": fn, **change}
    return _example(tc)


@pytest.mark.parametrize(
    "bad, field",
    [
        (_with(gt=[S(40, 44, 1, "structural")]), "messages[1].tool_calls[0].gt[0].start/end"),
        (_with(gt=[S(2, 6, 0, "structural")]), "messages[1].tool_calls[0].gt[0].level"),
        (_with(gt=[S(2, 6, 1, "schema")]), "messages[1].tool_calls[0].gt[0].category"),
        (
            _with(gt=[{"start": 2, "end": 6, "level": 1}]),
            "messages[1].tool_calls[0].gt[0].category",
        ),
        (_with(gt={"start": 2}), "messages[1].tool_calls[0].gt"),
        (_with(name=None), "messages[1].tool_calls[0].function.name"),
        (_with(arguments=[1]), "messages[1].tool_calls[0].function.arguments"),
        (_with(function="calc"), "messages[1].tool_calls[0].function"),
        (
            {"messages": [{"role": "assistant", "content": "", "tool_calls": ["calc"]}]},
            "messages[0].tool_calls[0]",
        ),
        (
            {"messages": [{"role": "assistant", "content": "", "tool_calls": {}}]},
            "messages[0].tool_calls",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q", "tool_calls": [_call()]},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "messages[0].tool_calls[0].gt",
        ),
    ],
)
def test_bad_tool_call_names_file_line_and_field(tmp_path, bad, field):
    p = _write(tmp_path, [_example(_call()), bad])
    with pytest.raises(DataError) as err:
        read_jsonl(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}:2: field {field}:"), msg
    assert "; " in msg


def test_spans_end_at_the_call_text(tmp_path):
    n = len(tool_call_text(_call()))
    ok = _write(tmp_path, [_with(gt=[S(n - 2, n, 1, "structural")])])
    assert read_jsonl(ok)[0]["messages"][1]["tool_calls"][0]["gt"][0]["end"] == n


# ------------------------------------------------------------------------ bundled data and tagger
def _bundled_tool_examples(limit=60):
    from cherry_mlx.data.paths import default_data_paths

    recs = read_jsonl(default_data_paths()["valid"])
    return [r for r in recs if r["id"].startswith("tools:")][:limit]


def test_bundled_calls_are_trained_inside_the_tool_markers():
    from cherry_mlx.models.loading import load_tokenizer

    tok = load_tokenizer("cherry-tiny")
    exs = _bundled_tool_examples()
    assert len(exs) >= 10
    enc, stats = encode_dataset(exs, tok, max_len=256)
    assert stats.spans_unmapped == 0 and stats.truncated == 0 and len(enc) == len(exs)
    specials = {
        t: tok.convert_tokens_to_ids(t) for t in ("<|spartan_tool|>", "<|spartan_tool_end|>")
    }
    for ex, e in zip(exs, enc):
        ids = e.tokens.tolist()
        a, b = ids.index(specials["<|spartan_tool|>"]), ids.index(specials["<|spartan_tool_end|>"])
        assert e.response[a : b + 1].all()
        name = ex["messages"][1]["tool_calls"][0]["function"]["name"]
        inside = np.arange(len(ids))[a:b]
        super_gt = [ids[i] for i in inside if e.level[i] == 2]
        assert tok.decode(super_gt) == name  # the invoked tool: verification super-GT
        assert all(e.category[i] == VERIF for i in inside if e.level[i] == 2)
        assert {int(c) for c in e.category[a:b][e.level[a:b] == 1]} == {STRUCT}


def test_tagger_tags_tool_calls_like_the_generator():
    from cherry_mlx.data.synth.tools import call_turn
    from cherry_mlx.selection.tagger import score, strip_spans, supervised_texts, tag_example

    gold = [
        _example(call_turn("get_weather", {"city": "Seoul", "unit": "celsius"})["tool_calls"][0]),
        _example(call_turn("set_alarm", {"time": "07:30", "label": "기상"})["tool_calls"][0]),
        _example(
            call_turn("convert_currency", {"amount": 40, "from": "USD", "to": "KRW"})["tool_calls"][
                0
            ]
        ),
    ]
    for g in gold:
        texts = [t for _, t in supervised_texts(g)]
        assert texts == ["", tool_call_text(g["messages"][1]["tool_calls"][0]), "It is 4."]
        pred = tag_example(strip_spans([g])[0])
        assert pred["messages"][1]["tool_calls"][0]["gt"] == g["messages"][1]["tool_calls"][0]["gt"]
    s = score([tag_example(x) for x in strip_spans(gold)], gold)
    assert s["structural"]["precision"] == s["structural"]["recall"] == 1.0
    assert s["verification"]["precision"] == s["verification"]["recall"] == 1.0


def test_assistant_pieces_order():
    m = {"role": "assistant", "content": "Hi.", "gt": [], "tool_calls": [_call(), _call()]}
    pieces = assistant_pieces(m)
    assert [t for t, _ in pieces] == ["Hi.", tool_call_text(_call()), tool_call_text(_call())]
    assert pieces[1][1] is CALL_GT
    assert (
        assistant_pieces({"role": "assistant", "content": "", "tool_calls": [_call()]})[0][0][0]
        == "{"
    )
