"""GT tagger (paper §3.2.2 steps 1-2): rules against hand labels, idempotence, errors, scoring,
statistics and the precision/recall floor on the bundled data (spans known by construction)."""

import json

import pytest

from cherry_mlx.selection.tag_report import char_stats, tag_file
from cherry_mlx.selection.tagger import (
    TagConfig,
    score,
    strip_spans,
    tag_example,
    tag_examples,
    tag_text,
)


def tagged(text, question=None):
    """{substring: (level, category)} of the tagger's spans on ``text``."""
    return {
        text[s["start"] : s["end"]]: (s["level"], s["category"])
        for s in tag_text(text, question=question)
    }


def test_korean_entities_numbers_dates():
    text = (
        "대한민국의 수도는 서울입니다. 헌법은 1948년 7월 17일에 제정되었고 "
        "이순신 장군은 1545년에 태어났습니다."
    )
    got = tagged(text)
    # hand labels: proper nouns (Kiwi NNP) and the numbers of the dates
    for want in ("대한민국", "서울", "1948", "7", "17", "이순신", "1545"):
        assert want in got and got[want][1] == "factual", (want, got)
    assert "수도" not in got and "헌법은" not in got  # common nouns stay untagged


def test_english_entities_numbers_dates():
    text = (
        "Marie Curie was born in Warsaw on November 7, 1867. She won 2 Nobel Prizes and "
        "moved to Paris."
    )
    got = tagged(text)
    for want in ("Marie Curie", "Warsaw", "November 7, 1867", "2", "Nobel Prizes", "Paris"):
        assert want in got and got[want][1] == "factual", (want, got)
    assert "She" not in got and "born" not in got


@pytest.mark.parametrize(
    "text, want, category",
    [
        ("아차, 틀렸습니다. 다시 보면 42입니다.", "아차", "self_correction"),
        ("Oops, that's wrong. It is 42.", "Oops", "self_correction"),
        ("잠깐, 확인해 보겠습니다.", "잠깐", "verification"),
        ("Wait, let me check the source.", "let me check", "verification"),
        ("죄송하지만 그 요청은 도와드릴 수 없습니다.", "도와드릴 수 없습니다", "guardrail"),
        ("I'm sorry, but I can't help with that.", "I can't help with that", "guardrail"),
        ("<|spartan_refuse|>That is not something I do.", "<|spartan_refuse|>", "guardrail"),
        ("<|spartan_atcha|> the year is 1950.", "<|spartan_atcha|>", "self_correction"),
    ],
)
def test_marker_vocabularies_are_ssgt(text, want, category):
    got = tagged(text)
    assert got.get(want) == (3, category), got


def test_tool_call_json_keys_values_and_closing():
    text = '{"name": "get_weather", "arguments": {"city": "Seoul", "days": 3}}'
    got = tagged(text)
    assert got["name"] == (1, "structural") and got["arguments"] == (1, "structural")
    assert got["city"] == (1, "structural") and got["Seoul"] == (1, "structural")
    assert got["get_weather"] == (2, "verification")  # the invocation is the decisive token
    assert got["3}}"] == (1, "structural")  # literal + closing braces merge into one run


def test_json_answer_values_are_factual_and_last_is_super():
    text = 'Formatted as JSON:\n{"country": "France", "capital": "Paris"}'
    got = tagged(text, question="What is the capital of France? Answer in JSON.")
    assert got["country"] == (1, "structural") and got["}"] == (1, "structural")
    assert got["France"][1] == "factual" and got["Paris"] == (2, "factual")


def test_arithmetic_results_are_reasoning_and_answer_is_super():
    text = (
        "First find the total: 1,200 × 4 = 4,800 won. So the change is 10,000 − 4,800 = 5,200 won."
    )
    got = tagged(text)
    assert got["4,800"] == (1, "reasoning") and got["5,200"] == (2, "reasoning")
    assert got["So"] == (1, "reasoning")
    assert "1,200" not in got and "10,000" not in got  # operands restate the question


def test_super_gt_is_the_new_word_of_the_answer_sentence():
    text = "좋은 질문입니다. 염소의 원소 기호는 Cl입니다. 라틴어 이름에서 왔습니다."
    got = tagged(text, question="염소의 원소 기호는 무엇인가요?")
    assert got["Cl"] == (2, "factual")
    text = "Good question. The answer is potassium. It was isolated in 1807."
    got = tagged(text, question="Which element has the symbol K?")
    assert got["potassium"] == (2, "factual")


def test_spans_are_disjoint_sorted_and_trimmed():
    text = "Wait, let me check: Seoul (서울) is the capital of South Korea, 1948."
    spans = tag_text(text)
    for a, b in zip(spans, spans[1:]):
        assert a["end"] <= b["start"]
    for s in spans:
        piece = text[s["start"] : s["end"]]
        assert piece == piece.strip() and piece


def _chat(content, gt=None):
    msg = {"role": "assistant", "content": content}
    if gt is not None:
        msg["gt"] = gt
    return {"messages": [{"role": "user", "content": "Where is the Eiffel Tower?"}, msg]}


def test_tagging_is_idempotent_and_keeps_existing_spans():
    ex = _chat("The Eiffel Tower is in Paris. It opened in 1889.")
    once = tag_example(ex)
    assert once["messages"][1]["gt"]
    assert tag_example(once) == once  # existing spans kept
    assert tag_example(once, TagConfig(overwrite=True)) == once  # re-tagging gives the same
    known = [{"start": 0, "end": 3, "level": 1, "category": "structural"}]
    kept = tag_example(_chat("The Eiffel Tower is in Paris.", known))
    assert kept["messages"][1]["gt"] == known
    empty = tag_example(_chat("The Eiffel Tower is in Paris.", []))
    assert empty["messages"][1]["gt"] == []  # "annotated: nothing is GT" is respected
    assert "gt" not in ex["messages"][1]  # input untouched


def test_prompt_completion_and_text_shapes():
    pc = tag_example({"prompt": "Capital of Japan?", "completion": "It is Tokyo."})
    assert [pc["completion"][s["start"] : s["end"]] for s in pc["gt"]] == ["Tokyo"]
    tx = tag_example({"text": "Seoul hosted the 1988 Olympics."})
    assert {tx["text"][s["start"] : s["end"]] for s in tx["gt"]} >= {"1988", "Olympics"}


def test_malformed_input_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = json.dumps(_chat("Paris."))
    bad.write_text(good + "\n" + good + "\n{not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:3"):
        tag_file(bad, None)
    span = [{"start": 0, "end": 99, "level": 1, "category": "factual"}]
    bad.write_text(good + "\n" + json.dumps(_chat("Paris.", span)) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2.*gt"):
        tag_file(bad, None)


def test_score_matches_hand_computation():
    text = "Seoul is big"
    gold = [
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": text,
                    "gt": [{"start": 0, "end": 5, "level": 2, "category": "factual"}],
                }
            ]
        }
    ]
    pred = [
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": text,
                    "gt": [
                        {"start": 0, "end": 2, "level": 1, "category": "factual"},
                        {"start": 9, "end": 12, "level": 1, "category": "structural"},
                    ],
                }
            ]
        }
    ]
    s = score(pred, gold)
    # factual: 2 predicted chars, both right; 5 gold chars -> P 1, R 2/5
    assert s["factual"]["precision"] == 1.0 and s["factual"]["recall"] == pytest.approx(0.4)
    # any: 5 predicted non-space chars, 2 right
    assert s["any"]["precision"] == pytest.approx(2 / 5) and s["any"]["recall"] == pytest.approx(
        2 / 5
    )
    assert s["super"]["precision"] == 0.0 and s["super"]["recall"] == 0.0
    assert s["structural"]["pred"] == 3 and s["structural"]["gold"] == 0


def test_char_stats_hand_count():
    ex = {
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": "ab cd",
                "gt": [{"start": 3, "end": 5, "level": 1, "category": "guardrail"}],
            },
        ]
    }
    st = char_stats([ex])
    assert (st.response, st.gt) == (4, 2) and st.ratio == 0.5
    assert st.shares()["guardrail"] == 1.0


def _bundled_valid():
    from cherry_mlx.data.jsonl import read_jsonl
    from cherry_mlx.data.paths import default_data_paths

    try:
        return read_jsonl(default_data_paths()["valid"])[:150]
    except FileNotFoundError:
        from cherry_mlx.data.build import generate

        return generate(seed=0, scale=0.03)[:150]


# Floors: ~0.1 below what the rules measured on the bundled valid split (first 150 examples:
# any P 0.86 R 0.94, factual 0.70/0.83, self_correction 0.96/0.85, guardrail 0.81/1.00,
# verification 0.84/0.98, super 0.73/0.70), loose enough for regenerated data.
FLOORS = {
    "any": (0.75, 0.8),
    "factual": (0.58, 0.7),
    "structural": (0.9, 0.9),
    "reasoning": (0.75, 0.9),
    "self_correction": (0.62, 0.65),
    "verification": (0.7, 0.85),
    "guardrail": (0.65, 0.85),
    "super": (0.58, 0.55),
}


def test_precision_recall_floor_on_bundled_data():
    gold = _bundled_valid()
    pred = tag_examples(strip_spans(gold))
    s = score(pred, gold)
    for k, (p, r) in FLOORS.items():
        if s[k]["gold"] == 0:
            continue
        assert s[k]["precision"] >= p and s[k]["recall"] >= r, (k, s[k])


def test_token_stats_on_chat_template(tmp_path):
    from cherry_mlx.data.encode import encode_example
    from cherry_mlx.models.loading import load_tokenizer
    from cherry_mlx.selection.tag_report import token_stats

    tok = load_tokenizer("cherry-tiny")
    content = "Seoul"
    ex = {
        "messages": [
            {"role": "user", "content": "Capital?"},
            {
                "role": "assistant",
                "content": content,
                "gt": [{"start": 0, "end": 5, "level": 2, "category": "factual"}],
            },
        ]
    }
    st = token_stats([ex], tok)
    # independent count: the content's own tokens are GT, the end-of-turn token is response only
    n_content = len(tok.encode(content, add_special_tokens=False))
    assert st.gt == n_content and st.response == n_content + 1
    assert st.levels[2] == n_content and st.shares()["factual"] == 1.0
    assert encode_example(ex, tok).response.sum() == st.response


def test_cli_tag_writes_output(tmp_path):
    from cherry_mlx_cli.main import app
    from typer.testing import CliRunner

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(_chat("The Eiffel Tower is in Paris.")) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(app, ["tag", str(src), "-o", str(out), "--tokenizer", "none"])
    assert res.exit_code == 0, res.output
    assert "GT" in res.output and (tmp_path / "out.png").exists()
    row = json.loads(out.read_text(encoding="utf-8"))
    content = row["messages"][1]["content"]
    assert "Paris" in [content[s["start"] : s["end"]] for s in row["messages"][1]["gt"]]
