"""The bundled default data set: determinism, span validity, question-disjoint splits, GT share.

References are independent of the generator: spans are checked against the JSON parser (tool
calls, JSON answers), against Python arithmetic on the expression written before each "=", and
against the knowledge table looked up by the record's subject; shares against the paper's 15.3%.
"""

from __future__ import annotations

import filecmp
import json
import os
import re
import subprocess
import sys

import pytest

from cherry_mlx.data.build import BuildConfig, build, generate, split_by_question
from cherry_mlx.data.categories import CATEGORIES
from cherry_mlx.data.jsonl import assistant_pieces, tool_call_text
from cherry_mlx.data.paths import DEFAULT_DATA_DIR, default_data_paths, ssgt_prompts_path
from cherry_mlx.data.synth.knowledge import COUNTRIES, ELEMENTS, EVENTS, KOREAN_CITIES, PLANETS
from cherry_mlx.data.synth.spans import josa, qid_of
from cherry_mlx.data.synth.stats import gt_stats

quiet = dict(log=lambda *_: None)


def _load(split):
    with open(default_data_paths()[split], encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def bundled():
    return {s: _load(s) for s in ("train", "valid", "test")}


@pytest.fixture(scope="module")
def small():
    return generate(seed=3, scale=0.08)


def _assistant_turns(records):
    for r in records:
        for m in r["messages"]:
            if m["role"] == "assistant":
                yield r, m


def _annotated(records):
    """(record, text, spans) of every assistant content and tool call (its canonical text)."""
    for r, m in _assistant_turns(records):
        for text, gt in assistant_pieces(m):
            yield r, text, gt or []


def test_build_is_byte_deterministic_and_seed_sensitive(tmp_path):
    """Same seed: identical bytes, even from another process with another hash seed."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    build(BuildConfig(out_dir=str(a), scale=0.03, seed=7), **quiet)
    code = (
        "from cherry_mlx.data.build import BuildConfig, build; "
        f"build(BuildConfig(out_dir={str(b)!r}, scale=0.03, seed=7), log=lambda *_: None)"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    build(BuildConfig(out_dir=str(c), scale=0.03, seed=8, prose=False), **quiet)
    for sub in ("default", "prose"):
        names = sorted(os.listdir(a / sub))
        assert names == sorted(os.listdir(b / sub)) and names
        match, mismatch, errors = filecmp.cmpfiles(a / sub, b / sub, names, shallow=False)
        assert not mismatch and not errors, mismatch
    train = "default/train.jsonl"
    assert (a / train).read_bytes() != (c / train).read_bytes()


def test_bundled_files_are_what_the_generator_writes(tmp_path):
    build(BuildConfig(out_dir=str(tmp_path), prose=False, token_stats=False), **quiet)
    for split in ("train", "valid", "test", "ssgt_prompts"):
        fresh = (tmp_path / "default" / f"{split}.jsonl").read_bytes()
        with open(os.path.join(DEFAULT_DATA_DIR, f"{split}.jsonl"), "rb") as f:
            assert f.read() == fresh, f"stale {split}: rerun `cherry-mlx data build`"


def test_spans_are_well_formed(small):
    n = 0
    for _, text, gt in _annotated(small):
        prev_end = 0
        for sp in sorted(gt, key=lambda s: s["start"]):
            piece = text[sp["start"] : sp["end"]]
            assert piece and piece == piece.strip(), (piece, text)
            assert sp["start"] >= prev_end, "spans overlap"
            assert sp["level"] in (1, 2, 3) and sp["category"] in CATEGORIES
            prev_end, n = sp["end"], n + 1
    assert n > 500


def _spans(m, **want):
    return [
        m["content"][s["start"] : s["end"]]
        for s in m["gt"]
        if all(s[k] == v for k, v in want.items())
    ]


def test_tool_calls_are_real_tool_calls_with_spans_matching_the_parsed_json(small):
    """Calls are ``tool_calls`` entries (the template wraps them in its tool markers), and their
    spans, read off the canonical text, are the keys and values the JSON parser finds."""
    turns = [m for r, m in _assistant_turns(small) if r.get("tools")]
    calls = [m for m in turns if m.get("tool_calls")]
    assert len(calls) > 20 and len(calls) * 2 == len(turns)  # a call turn, then an answer turn
    for m in calls:
        assert m["content"] == "" and "gt" not in m and len(m["tool_calls"]) == 1
        tc = m["tool_calls"][0]
        text = tool_call_text(tc)
        call = json.loads(text)
        assert call == {k: tc["function"][k] for k in ("name", "arguments")}
        spans = [(text[s["start"] : s["end"]], s["level"], s["category"]) for s in tc["gt"]]
        assert [p for p, lvl, _ in spans if lvl == 2] == [call["name"]]
        assert [p for p, _, c in spans if c == "verification"] == [call["name"]]
        keys = ["name", "arguments"] + list(call["arguments"])
        values = [v if isinstance(v, str) else json.dumps(v) for v in call["arguments"].values()]
        assert [p for p, _, c in spans if c == "structural"] == ["name", "arguments"] + [
            x for kv in zip(keys[2:], values) for x in kv
        ] + ["}}"]


def test_json_answer_spans_match_the_parsed_json(small):
    recs = [r for r in small if r["id"].startswith("json:")]
    assert len(recs) > 10
    for r in recs:
        m = r["messages"][-1]
        obj = json.loads(m["content"][m["content"].index("{") : m["content"].rindex("}") + 1])
        ks, ka = list(obj)
        assert _spans(m, category="structural") == [ks, ka, "}"]
        assert _spans(m, level=2) == [str(obj[ka])]


_OPS = str.maketrans({"×": "*", "÷": "/", "−": "-", ",": None})


def test_every_computed_number_is_right(small):
    """A reasoning or self-correction number written after "A op B =" equals Python's result."""
    checked = 0
    expr_before = re.compile(r"([\d,]+(?:\s*[-+×÷−]\s*[\d,]+%?)+)\s*=\s*$")
    for _, text, gt in _annotated(small):
        for s in gt:
            piece = text[s["start"] : s["end"]]
            hit = expr_before.search(text[: s["start"]])
            if s["category"] in ("reasoning", "self_correction") and hit and piece[0].isdigit():
                expr = re.sub(r"([\d]+)%", r"(\1/100)", hit.group(1).translate(_OPS))
                assert eval(expr) == int(piece.replace(",", "")), (expr, piece)
                checked += 1
    assert checked > 100


def _answers_by_subject():
    """Every answer the knowledge table allows for each subject, looked up independently."""
    slug = lambda t: "".join(c for c in t.lower() if c.isalnum())  # noqa: E731
    out = {}
    for c in COUNTRIES:
        out[f"country.{slug(c[1])}"] = {x for x in c[2:] if x}
    for z, sym, ko, en in ELEMENTS:
        out[f"element.{sym.lower()}"] = {str(z), sym}
    for key, ko, en, year in EVENTS:
        out[f"event.{key}"] = {str(year)}
    for cko, cen, pko, pen in KOREAN_CITIES:
        out[f"city.{slug(cen)}"] = {pko, pen}
    for n, ko, en in PLANETS:
        out[f"planet.{n}"] = {str(n)}
    return out


def test_answer_entities_are_the_knowledge_tables(small):
    answers, checked = _answers_by_subject(), 0
    for r, m in _assistant_turns(small):
        fam, q = r["id"].split(":")[0], qid_of(r)
        if q in answers and fam in ("factual", "multiturn", "json", "jamkkan", "atcha"):
            key = _spans(m, level=2) or _spans(m, level=3, category="self_correction")[-1:]
            assert key and key[-1] in answers[q], (r["id"], key)
            checked += 1
    assert checked > 200


def test_atcha_wrong_claim_is_not_gt_and_pivot_precedes_correction(small):
    recs = [r for r in small if r["id"].startswith("atcha:")]
    assert len(recs) > 10
    for r in recs:
        m = r["messages"][-1]
        ss = [s for s in m["gt"] if s["level"] == 3]
        pivot = m["content"][ss[0]["start"] : ss[0]["end"]]
        assert pivot.startswith(("아차", "Oops")) and len(ss) == 2
        assert all(s["start"] >= ss[0]["start"] for s in m["gt"]), "GT inside the wrong claim"


def test_splits_share_no_question(bundled):
    qids = {s: {qid_of(r) for r in recs} for s, recs in bundled.items()}
    users = {
        s: {m["content"] for r in recs for m in r["messages"] if m["role"] == "user"}
        for s, recs in bundled.items()
    }
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert not qids[a] & qids[b]
        assert not users[a] & users[b]
    assert 4000 <= len(bundled["train"]) <= 6500
    assert 250 <= len(bundled["valid"]) <= 400 and 250 <= len(bundled["test"]) <= 400
    fams = lambda recs: {r["id"].split(":")[0] for r in recs}  # noqa: E731
    assert fams(bundled["test"]) >= {
        "factual",
        "arithmetic",
        "tools",
        "atcha",
        "jamkkan",
        "guardrail",
        "json",
        "multiturn",
        "unit",
    }


def test_split_is_by_question_not_by_example(small):
    splits = split_by_question(small, seed=3)
    where = {}
    for name, recs in splits.items():
        for r in recs:
            assert where.setdefault(qid_of(r), name) == name
    assert sum(map(len, splits.values())) == len(small)


def test_gt_share_and_categories_near_the_paper(bundled):
    st = gt_stats(bundled["train"], "word")
    assert 0.12 <= st["gt_share"] <= 0.18, st["gt_share"]
    cs = st["category_share"]
    assert cs["factual"] == max(cs.values())
    assert all(0.02 <= cs[c] <= 0.5 for c in CATEGORIES), cs
    assert 0.005 <= st["level_share"][3] <= 0.05  # SSGT: a few tokens per moment example


def test_gt_share_in_real_tokens(bundled):
    from cherry_mlx.data.synth.stats import load_hf_tokenizer

    tok = load_hf_tokenizer(
        os.path.join(os.path.dirname(DEFAULT_DATA_DIR), "..", "cherry-tiny", "tokenizer.json")
    )
    assert tok is not None, "weights/cherry-tiny/tokenizer.json is missing"
    st = gt_stats(bundled["train"][:1500], "token", tok)
    assert 0.11 <= st["gt_share"] <= 0.19, st["gt_share"]


def test_ssgt_prompts_are_held_out_and_usable(bundled):
    with open(ssgt_prompts_path(), encoding="utf-8") as f:
        prompts = [json.loads(line) for line in f]
    test_qids = {qid_of(r) for r in bundled["test"]}
    train_users = {
        m["content"] for r in bundled["train"] for m in r["messages"] if m["role"] == "user"
    }
    kinds = [p["kind"] for p in prompts]
    assert {k: kinds.count(k) >= 10 for k in ("atcha", "jamkkan", "guardrail", "benign")} == {
        "atcha": True,
        "jamkkan": True,
        "guardrail": True,
        "benign": True,
    }
    for p in prompts:
        q = qid_of(p)
        assert q in test_qids or q.startswith("heldout."), p["id"]
        assert p["messages"][-1]["role"] == "user"
        assert p["messages"][-1]["content"] not in train_users
        if p["kind"] == "atcha":
            assert p["assistant_prefix"] and "아차" not in p["assistant_prefix"]
            assert "Oops" not in p["assistant_prefix"]
            if not q.startswith("math."):
                assert p["expect"]["answer"] not in p["assistant_prefix"]


def test_bundled_data_passes_the_jsonl_validator():
    from cherry_mlx.data.jsonl import read_jsonl

    assert len(read_jsonl(default_data_paths()["test"])) > 250
    assert len(read_jsonl(os.path.join(DEFAULT_DATA_DIR, "..", "prose", "ko.jsonl"))) > 20


def test_missing_data_error_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="cherry-mlx data build"):
        default_data_paths(str(tmp_path))
    with pytest.raises(ValueError, match="scale"):
        generate(scale=0)


@pytest.mark.parametrize(
    "word,pair,want",
    [
        ("서울", "은는", "서울은"),
        ("파리", "은는", "파리는"),
        ("경기도", "이가", "경기도가"),
        ("1,000", "을를", "1,000을"),
        ("24", "을를", "24를"),
        ("서울", "으로", "서울로"),
        ("운동", "으로", "운동으로"),
        ("회의", "으로", "회의로"),
        ("킬로그램", "은는", "킬로그램은"),
    ],
)
def test_korean_particles(word, pair, want):
    assert josa(word, pair) == want
