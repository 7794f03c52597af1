"""Property-based fuzzing of everything that reads user input: the JSONL validator and encoder, the
GT tagger, model/settings config loading and command-line option parsing.

The property, for any input: the call succeeds, or fails with the project's one-line error (a
``ValueError`` / ``FileNotFoundError`` whose message is one non-empty line); never another
exception, and the input file is never written. ``derandomize=True`` and fixed example budgets make
the run deterministic and short enough for CI.
"""

import hashlib
import json
import math
from pathlib import Path

import pytest
import yaml
from fuzzing import ERRORS, FUZZ, outcome
from hypothesis import given, settings
from hypothesis import strategies as st

from cherry_mlx.data.categories import CATEGORIES
from cherry_mlx.data.encode import encode_example
from cherry_mlx.data.jsonl import read_jsonl
from cherry_mlx.models.loading import WEIGHTS_DIR, build_model, load_config, load_tokenizer
from cherry_mlx.selection.tagger import TagConfig, tag_example
from cherry_mlx.training.config import resolve_config


def one_line_or_success(fn, *args, **kw):
    """Run ``fn``; allow only success or a one-line project error (its result, or None)."""
    return outcome(fn, *args, **kw)[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- strategies ----------------------------------------------------------------------------------
texts = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",))
    | st.sampled_from("서울입니다.0123 \n"),
    max_size=40,
)
any_text = st.text(max_size=20)  # may hold lone surrogates
scalars = st.none() | st.booleans() | st.integers(-5, 50) | st.floats() | any_text
json_values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(any_text, c, max_size=3),
    max_leaves=6,
)
spans = st.lists(
    st.fixed_dictionaries(
        {
            "start": st.integers(-1, 45),
            "end": st.integers(-1, 45),
            "level": st.integers(0, 4) | st.sampled_from(["1", 1.0]),
            "category": st.sampled_from([*CATEGORIES, "nope"]),
        }
    ),
    max_size=3,
)
tool_calls = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {"name": texts | st.integers(), "arguments": json_values | st.just('{"a": 1}')}
            ),
        },
        optional={"gt": spans},
    ),
    max_size=2,
)
turn = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "user", "assistant", "tool", "bot"]),
        "content": st.one_of(texts, texts, texts, st.none(), st.integers()),
    },
    optional={"gt": spans, "thinking": texts | st.integers(), "tool_calls": tool_calls},
)
examples = st.one_of(
    st.fixed_dictionaries(
        {"messages": st.lists(turn, max_size=4)}, optional={"gt": spans, "tools": json_values}
    ),
    st.fixed_dictionaries({"prompt": texts, "completion": texts}, optional={"gt": spans}),
    st.fixed_dictionaries({"text": texts | st.integers()}, optional={"gt": spans}),
    json_values,
)


def _line(value) -> bytes:
    try:
        return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()
    except (ValueError, TypeError):
        return b"{}"


lines = st.one_of(
    examples.map(_line),
    st.binary(max_size=30),  # not JSON, not UTF-8
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),  # deep nesting
)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(WEIGHTS_DIR / "cherry-tiny")


# -- the JSONL validator and the encoder --------------------------------------------------------
@settings(max_examples=100, **FUZZ)
@given(rows=st.lists(lines, min_size=0, max_size=4))
def test_fuzz_jsonl_validator_never_crashes_or_writes(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("jsonl") / "data.jsonl"
    path.write_bytes(b"\n".join(rows) + b"\n")
    before = digest(path)
    one_line_or_success(read_jsonl, path)
    assert digest(path) == before


@settings(max_examples=60, **FUZZ)
@given(example=examples)
def test_fuzz_valid_examples_encode(tmp_path_factory, tokenizer, example):
    path = tmp_path_factory.mktemp("enc") / "data.jsonl"
    path.write_bytes(_line(example) + b"\n")
    rows = one_line_or_success(read_jsonl, path)
    if not rows:
        return
    enc = one_line_or_success(encode_example, rows[0], tokenizer)
    if enc is not None:  # per-token arrays stay aligned
        assert len(enc.tokens) == len(enc.response) == len(enc.level) == len(enc.category)


# -- the tagger ----------------------------------------------------------------------------------
@settings(max_examples=15, **FUZZ)
@given(question=texts, answer=texts)
def test_fuzz_tagger_spans_stay_inside_the_text(question, answer):
    ex = {"messages": [{"role": "user", "content": question},
                       {"role": "assistant", "content": answer}]}  # fmt: skip
    out = one_line_or_success(tag_example, ex, TagConfig())
    if out is None:
        return
    for span in out["messages"][1].get("gt", []):
        assert 0 <= span["start"] < span["end"] <= len(answer)
        assert span["level"] in (1, 2, 3) and span["category"] in CATEGORIES


# -- config loading ------------------------------------------------------------------------------
config_values = st.none() | st.booleans() | st.integers(-2, 70) | st.floats() | st.text(max_size=3)
model_configs = st.one_of(
    st.fixed_dictionaries(
        {
            "model_type": st.sampled_from(["llama", "llama", "gpt2"]),
            "hidden_size": st.sampled_from([64, 32]) | config_values,
            "num_hidden_layers": st.integers(-1, 3) | config_values,
            "intermediate_size": st.just(128) | config_values,
            "num_attention_heads": st.sampled_from([4, 2]) | config_values,
            "vocab_size": st.just(256) | config_values,
        },
        optional={
            "num_key_value_heads": st.sampled_from([2, 1]) | config_values,
            "head_dim": config_values,
            "rope_theta": config_values,
            "rms_norm_eps": config_values,
            "tie_word_embeddings": config_values,
        },
    ),
    json_values,
)


@settings(max_examples=120, **FUZZ)
@given(config=model_configs)
def test_fuzz_model_config_loading(tmp_path_factory, config):
    d = tmp_path_factory.mktemp("model")
    (d / "config.json").write_text(json.dumps(config, allow_nan=True))
    before = digest(d / "config.json")
    cfg = one_line_or_success(load_config, d)
    if cfg is not None:  # a config that passes the checks builds (lazily: nothing allocated)
        one_line_or_success(build_model, cfg)
    assert digest(d / "config.json") == before


setting_values = (
    st.none() | st.booleans() | st.integers(-3, 400) | st.floats() | st.text(max_size=6)
)
settings_maps = st.dictionaries(
    st.sampled_from(["steps", "learning_rate", "lambda", "seed", "batch-size", "select", "level",
                     "categories", "demo", "name", "warmup", "grad_clip", "bogus"]),
    setting_values | st.lists(st.text(max_size=4), max_size=2),
    max_size=4,
)  # fmt: skip


@settings(max_examples=120, **FUZZ)
@given(values=settings_maps, as_yaml=st.booleans(), raw=st.none() | st.binary(max_size=20))
def test_fuzz_settings_file_loading(tmp_path_factory, values, as_yaml, raw):
    path = tmp_path_factory.mktemp("cfg") / ("s.yaml" if as_yaml else "s.json")
    if raw is not None:
        path.write_bytes(raw)
    elif as_yaml:
        path.write_text(yaml.safe_dump(values, allow_unicode=True))
    else:
        path.write_text(json.dumps(values, allow_nan=True))
    before = digest(path)
    cfg = one_line_or_success(resolve_config, {}, path)
    if cfg is not None:
        for name in ("learning_rate", "lam", "grad_clip"):
            assert isinstance(getattr(cfg, name), float) and math.isfinite(getattr(cfg, name))
        assert isinstance(cfg.steps, int) and cfg.seed >= 0
    assert digest(path) == before


# -- option parsing ------------------------------------------------------------------------------
option_text = st.sampled_from(["nan", "inf", "-1", "0", "1.5", "1e-4", "abc", "", "3", "-0"])


@settings(max_examples=40, **FUZZ)
@given(
    command=st.sampled_from(["generate", "compress", "fuse", "train"]),
    opts=st.lists(
        st.tuples(
            st.sampled_from(["--temp", "--top-p", "--repetition-penalty", "--seed", "--lambda",
                             "--heal-steps", "--steps", "--balance", "--learning-rate",
                             "--top-k", "--min-p", "--loops", "--batch-size"]),
            option_text,
        ),
        max_size=3,
    ),
)  # fmt: skip
def test_fuzz_option_parsing(tmp_path_factory, command, opts):
    """Every option combination ends in a usage error, a one-line error, or (all valid) the
    missing model: never a traceback, never any work (the model does not exist)."""
    from cherry_mlx_cli.main import app
    from typer.testing import CliRunner

    tmp = tmp_path_factory.mktemp("opts")
    missing, runs = str(tmp / "no-model"), str(tmp / "runs")
    args = {
        "generate": [missing, "-p", "hi"],
        "compress": [missing, "--to", "1L", "-o", str(tmp / "out")],
        "fuse": [missing, missing, "--runs-dir", runs],
        "train": ["--model", missing, "--steps", "1", "--runs-dir", runs, "--name", "fz"],
    }[command]
    flat = [x for pair in opts for x in pair]
    res = CliRunner().invoke(app, [command, *args, *flat])
    if isinstance(res.exception, SystemExit) or res.exception is None:
        assert res.exit_code != 0  # a usage error (no such option, bad number, out of range)
        return
    assert isinstance(res.exception, ERRORS), repr(res.exception)
    msg = str(res.exception)
    assert msg.strip() and "\n" not in msg, msg
