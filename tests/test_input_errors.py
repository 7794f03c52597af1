"""Bad user input gives one line naming the file/value and the fix, never a traceback or a silent
wrong result (issue 10, part B). Each test is named after the finding it guards."""

import io
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from typer.testing import CliRunner

from cherry_mlx._io import InputError, loads_json, read_bytes, read_stdin_text, repair_text
from cherry_mlx.compression.config import CompressConfig
from cherry_mlx.compression.heal import gap_text
from cherry_mlx.data.encode import Encoded, EncodeStats
from cherry_mlx.data.jsonl import DataError, read_jsonl
from cherry_mlx.decoding.generate import SamplingConfig, check_serving_options
from cherry_mlx.evaluation.config import EvalConfig
from cherry_mlx.fusion.config import DistillConfig, FuseConfig
from cherry_mlx.models import build_model, save_model
from cherry_mlx.models.loading import WEIGHTS_DIR, load_config, load_model
from cherry_mlx.training import TrainConfig
from cherry_mlx.training.config import resolve_config
from cherry_mlx.training.data import load_splits, warn_without_gt
from cherry_mlx.training.prepare import check_vocab

REPO = Path(__file__).resolve().parents[1]


def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.strip(), msg
    return msg


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def cli(*args):
    from cherry_mlx_cli.main import app

    return CliRunner().invoke(app, list(args))


# -- settings files go through the typed parser ------------------------------------------------
def test_yaml_learning_rate_1e_4_string_is_coerced_to_float(tmp_path):
    # YAML 1.1 reads 1e-4 (no dot) as a string; the command line would parse it as a float
    f = write(tmp_path / "s.yaml", "learning_rate: 1e-4\nsteps: '12'\ncategories: factual\n")
    cfg = resolve_config({}, f)
    assert cfg.learning_rate == 1e-4 and isinstance(cfg.learning_rate, float)
    assert cfg.steps == 12 and cfg.categories == ["factual"]


def test_settings_file_bad_value_names_file_and_key(tmp_path):
    f = write(tmp_path / "s.yaml", "steps: many\n")
    with pytest.raises(ValueError) as err:
        resolve_config({}, f)
    assert str(f) in one_line(err) and "steps" in str(err.value)
    f = write(tmp_path / "s.json", '{"learning_rate": "fast"}')
    with pytest.raises(ValueError, match=r"s\.json: learning_rate: 'fast' is not a number"):
        TrainConfig.from_file(f)


def test_settings_file_nan_and_bool_for_int_rejected(tmp_path):
    f = write(tmp_path / "s.yaml", "learning_rate: .nan\n")
    with pytest.raises(ValueError, match="not a finite number"):
        resolve_config({}, f)
    f = write(tmp_path / "s.json", '{"steps": true}')
    with pytest.raises(ValueError, match="steps: True is not an integer"):
        resolve_config({}, f)


def test_settings_file_not_utf8_deeply_nested_or_a_directory(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ValueError, match=r"s\.yaml:1: not valid UTF-8 \(byte e9"):
        resolve_config({}, bad)
    deep = write(tmp_path / "d.json", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply") as err:
        resolve_config({}, deep)
    one_line(err)
    with pytest.raises(ValueError, match="is a directory"):
        resolve_config({}, tmp_path)


def test_lone_surrogate_in_a_yaml_settings_file(tmp_path):
    f = write(tmp_path / "s.yaml", 'name: "run\\ud800"\n')
    with pytest.raises(ValueError, match=r"s\.yaml: name: lone surrogate '\\ud800'"):
        resolve_config({}, f)


def test_unreadable_file_is_one_line(tmp_path, monkeypatch):
    f = write(tmp_path / "data.jsonl", "{}")

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(InputError, match="permission denied.*chmod u\\+r") as err:
        read_bytes(f, "data file")
    assert str(f) in one_line(err)


# -- command-line values ------------------------------------------------------------------------
def test_seed_minus_1_rejected_everywhere():
    with pytest.raises(ValueError, match="--seed -1: must be >= 0"):
        TrainConfig(seed=-1)
    with pytest.raises(ValueError, match="--seed -1"):
        EvalConfig(seed=-1)
    with pytest.raises(ValueError, match="--seed -1"):
        check_serving_options(None, 10, False, None, seed=-1)
    res = cli("generate", "nowhere", "-p", "hi", "--seed", "-1")
    assert res.exit_code == 2 and "greater than or equal to 0" in res.output


@pytest.mark.parametrize(
    "args",
    [
        ["data", "build", "--seed", "-1"],
        ["ssgt-eval", "nowhere", "--seed", "-1"],
        ["cabstractor", "train", "--seed", "-1"],
        ["eval", "nowhere", "--seed", "-1"],
        ["train", "--seed", "-1"],
    ],
    ids=lambda a: a[0],
)
def test_seed_minus_1_rejected_by_every_command(args):
    res = cli(*args)
    assert res.exit_code != 0
    err = res.exception
    if isinstance(err, ValueError):  # the settings dataclass said it
        assert "--seed -1" in str(err) and "\n" not in str(err)
    else:  # typer's range check: a usage error before anything runs
        assert "greater than or equal to 0" in res.output, res.output


@pytest.mark.parametrize(
    "make",
    [
        lambda: SamplingConfig(temp=math.nan),
        lambda: SamplingConfig(repetition_penalty=math.nan),
        lambda: SamplingConfig(top_p=math.inf),
        lambda: TrainConfig(lam=math.nan),
        lambda: TrainConfig(learning_rate=math.inf),
        lambda: CompressConfig.from_flat(lam=math.nan),
        lambda: FuseConfig.from_flat(experts=["a"], balance=math.nan),
        lambda: DistillConfig.from_flat(beta=math.inf),
    ],
    ids=[
        "temp",
        "repetition-penalty",
        "top-p",
        "lambda",
        "lr",
        "compress-lambda",
        "balance",
        "beta",
    ],
)
def test_nan_or_inf_float_option_rejected(make):
    with pytest.raises(ValueError, match="finite") as err:
        make()
    one_line(err)


def test_temp_nan_on_the_command_line_is_one_line_error():
    res = cli("generate", "nowhere", "-p", "hi", "--temp", "nan")
    assert res.exit_code != 0
    assert isinstance(res.exception, (ValueError, SystemExit))
    if isinstance(res.exception, ValueError):
        assert "--temp nan: not a finite number" in str(res.exception)


@pytest.mark.parametrize(
    "make, flag",
    [
        (lambda: CompressConfig.from_flat(heal_steps=-1), "--heal-steps -1"),
        (lambda: CompressConfig.from_flat(pre_unroll_steps=-2), "--pre-unroll-steps -2"),
        (lambda: FuseConfig.from_flat(experts=["a"], steps=-3), "--steps -3"),
        (lambda: FuseConfig.from_flat(experts=["a"], balance=-1.0), "--balance -1.0"),
        (lambda: FuseConfig.from_flat(experts=["a"], top_k=0), "--top-k 0"),
    ],
)
def test_negative_counts_rejected(make, flag):
    with pytest.raises(ValueError, match=flag):
        make()


def test_lambda_1_5_rejected_before_any_work(tmp_path):
    # the model does not exist: the error must be about --lambda, found before loading anything
    res = cli("compress", str(tmp_path / "nope"), "--to", "1L", "--lambda", "1.5")
    assert res.exit_code != 0 and "--lambda 1.5: must be in [0, 1]" in str(res.exception)


# -- model configs and weights ------------------------------------------------------------------
def model_dir(tmp_path, cfg) -> Path:
    d = tmp_path / "m"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return d


@pytest.mark.parametrize(
    "edit, expect",
    [
        (lambda c: [c], "holds a JSON list"),
        (lambda c: {}, "is empty"),
        (lambda c: {"model_type": "llama", "hidden_size": 64}, "lacks num_hidden_layers"),
        (lambda c: {**c, "num_hidden_layers": "8"}, "num_hidden_layers is '8', not an integer"),
        (lambda c: {**c, "num_hidden_layers": 0}, "num_hidden_layers is 0"),
        (lambda c: {**c, "hidden_size": 86, "num_attention_heads": 2}, "must be even"),
        (lambda c: {**c, "head_dim": 43}, "head dimension is 43"),
        (lambda c: {**c, "rope_theta": math.nan}, "rope_theta is nan"),
        (lambda c: {**c, "num_key_value_heads": 3}, "not a multiple of num_key_value_heads"),
    ],
    ids=["list", "empty", "partial", "quoted", "zero-layers", "odd-head", "odd-head-dim",
         "nan-rope-theta", "kv-heads"],
)  # fmt: skip
def test_bad_config_json_is_one_line(tmp_path, tiny_config, edit, expect):
    d = model_dir(tmp_path, edit(tiny_config))
    with pytest.raises(ValueError, match=expect) as err:
        load_config(d)
    assert str(d / "config.json") in one_line(err)


def test_zero_layer_preset_rejected(tmp_path, tiny_config):
    from cherry_mlx.models.info import describe

    d = model_dir(tmp_path, {**tiny_config, "num_hidden_layers": 0})
    with pytest.raises(ValueError, match="num_hidden_layers is 0; it must be at least 1") as err:
        describe(str(d))  # `cherry-mlx info PRESET`, and training from it, read it this way
    one_line(err)


def test_nan_weights_refused(tmp_path, tiny_config):
    model = build_model(tiny_config)
    mx.eval(model.parameters())
    model.layers[0].mlp.up_proj.weight[0, 0] = math.nan
    path = save_model(model, tmp_path / "m", tiny_config)
    with pytest.raises(ValueError, match="up_proj.weight holds NaN") as err:
        load_model(path)
    one_line(err)


def test_nan_rope_theta_in_a_saved_model_refused(tmp_path, tiny_config):
    model = build_model(tiny_config)
    mx.eval(model.parameters())
    path = save_model(model, tmp_path / "m", tiny_config)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "rope_theta": math.nan}))
    with pytest.raises(ValueError, match="rope_theta is nan"):
        load_model(path)


# -- data files -----------------------------------------------------------------------------------
def messages(assistant="Paris.", **extra):
    return {"messages": [{"role": "user", "content": "Capital?"},
                         {"role": "assistant", "content": assistant, **extra}]}  # fmt: skip


def jsonl(tmp_path, *rows, name="train.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_non_utf8_data_names_file_and_line(tmp_path):
    path = jsonl(tmp_path, messages())
    path.write_bytes(path.read_bytes() + b'{"text": "caf\xff"}\n')
    with pytest.raises(DataError, match=r"train\.jsonl:2: not valid UTF-8 \(byte ff") as err:
        read_jsonl(path)
    one_line(err)


def test_lone_surrogate_in_data_names_file_line_and_field(tmp_path):
    path = jsonl(tmp_path, messages(), '{"text": "bad \\ud800 half"}')
    with pytest.raises(DataError, match=r"train\.jsonl:2: field text: lone surrogate '\\ud800'"):
        read_jsonl(path)


def test_deeply_nested_json_line(tmp_path):
    path = jsonl(tmp_path, '{"text": "x", "extra": ' + "[" * 50_000 + "]" * 50_000 + "}")
    with pytest.raises(DataError, match=r"train\.jsonl:1: .*nested too deeply"):
        read_jsonl(path)


def test_thinking_5_rejected(tmp_path):
    path = jsonl(tmp_path, messages(thinking=5))
    with pytest.raises(DataError, match=r":1: field messages\[1\]\.thinking: expected a string"):
        read_jsonl(path)


def test_top_level_gt_on_messages_example_rejected(tmp_path):
    row = {**messages(), "gt": [{"start": 0, "end": 5, "level": 1, "category": "factual"}]}
    with pytest.raises(DataError, match="field gt: top-level GT spans on a messages example"):
        read_jsonl(jsonl(tmp_path, row))


def test_tool_call_arguments_not_json_rejected(tmp_path):
    call = {"type": "function", "function": {"name": "f", "arguments": "{city: Seoul"}}
    row = messages("", tool_calls=[call])
    with pytest.raises(DataError, match=r"tool_calls\[0\]\.function\.arguments: .* not a JSON obj"):
        read_jsonl(jsonl(tmp_path, row))
    call["function"]["arguments"] = '{"city": "Seoul"}'  # a JSON string is fine (OpenAI style)
    assert read_jsonl(jsonl(tmp_path, messages("", tool_calls=[call])))


def test_train_data_file_says_pass_the_directory(tmp_path):
    path = jsonl(tmp_path, messages())
    with pytest.raises(ValueError, match="is a file; pass the directory") as err:
        load_splits(str(path), None, 64)
    assert "train.jsonl/train.jsonl" not in one_line(err)


class _Tok:
    """Enough of a tokenizer for the fallback path of the encoder: one id per character."""

    chat_template = None
    has_chat_template = False
    eos_token_id = 2
    eos_token_ids = [2]

    def __len__(self):
        return 256

    def encode(self, text, add_special_tokens=True):
        return [min(ord(c), 255) for c in text]


def _split(n=4, **kw):
    stats = EncodeStats(examples=n, **kw)
    return [], stats


def test_training_data_is_empty_names_its_cause(tmp_path, monkeypatch):
    import cherry_mlx.training.data as tdata

    data = tmp_path / "d"
    data.mkdir()
    jsonl(data, messages())
    # cause 1: encoding dropped every example (truncated inside the prompt)
    monkeypatch.setattr(tdata, "load_split", lambda *a: (*_split(dropped_no_response=4), []))
    with pytest.raises(ValueError, match="all 4 examples .* dropped when encoding") as err:
        load_splits(str(data), None, 8)
    assert "training data is empty" in one_line(err)
    # cause 2: one usable example and no valid.jsonl: the hold-out would take it
    one = [Encoded(np.zeros(3, np.int32), np.ones(3, bool), np.zeros(3, np.int8),
                   np.full(3, -1, np.int8))]  # fmt: skip
    monkeypatch.setattr(tdata, "load_split", lambda *a: (one, EncodeStats(1, 1), []))
    with pytest.raises(ValueError, match="one usable example .* held out"):
        load_splits(str(data), None, 8)


def test_empty_valid_split_after_truncation_warns(tmp_path, monkeypatch):
    import cherry_mlx.training.data as tdata

    data = tmp_path / "d"
    data.mkdir()
    jsonl(data, messages())
    jsonl(data, messages(), name="valid.jsonl")
    one = [Encoded(np.zeros(3, np.int32), np.ones(3, bool), np.zeros(3, np.int8),
                   np.full(3, -1, np.int8))]  # fmt: skip
    monkeypatch.setattr(
        tdata,
        "load_split",
        lambda path, *a: (
            (one, EncodeStats(1, 1), [])
            if path.name == "train.jsonl"
            else (*_split(1, dropped_no_response=1), [])
        ),
    )
    with pytest.warns(UserWarning, match="valid split is empty.*no evaluation.*no best/"):
        load_splits(str(data), None, 8)


def test_select_gt_on_data_without_gt_spans_warns():
    plain = Encoded(np.zeros(4, np.int32), np.ones(4, bool), np.zeros(4, np.int8),
                    np.full(4, -1, np.int8))  # fmt: skip
    with pytest.warns(UserWarning, match="--select gt: the training data has no GT spans"):
        warn_without_gt("gt", [plain])
    tagged = Encoded(plain.tokens, plain.response, np.array([0, 1, 0, 0], np.int8), plain.category)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_without_gt("gt", [plain, tagged])  # some GT: no warning
        warn_without_gt("all", [plain])  # the plain loss was asked for


# -- silent wrong results -----------------------------------------------------------------------
def test_no_heal_message_compares_merged_and_source_losses():
    # the numbers: merged 7.75 > source 7.55 must never read "did not raise the loss"
    text = gap_text(7.55, 7.75, math.nan, healed=False)
    assert "did not raise" not in text and "7.7500" in text and "7.5500" in text
    assert "did not raise" in gap_text(7.55, 7.50, math.nan, healed=True)
    assert "did not raise" not in gap_text(1.83, 18.65, math.nan, healed=True)
    assert gap_text(1.0, 2.0, 0.25, healed=True) == "25.0%"


def test_model_vocabulary_smaller_than_tokenizer_fails_before_work(tmp_path, tiny_config):
    from cherry_mlx.compression.heal import compress
    from cherry_mlx.models.loading import load_tokenizer

    tok = load_tokenizer(WEIGHTS_DIR / "cherry-tiny")  # 4096 ids
    with pytest.raises(ValueError, match="4,096 tokens but the model has vocab_size 256"):
        check_vocab(tok, "tok", 256)
    check_vocab(tok, "tok", 4096)  # fits
    model = build_model(tiny_config)  # vocab 256
    mx.eval(model.parameters())
    src = save_model(
        model, tmp_path / "small", tiny_config, tokenizer_dir=WEIGHTS_DIR / "cherry-tiny"
    )
    out = tmp_path / "out"
    cfg = CompressConfig.from_flat(model=str(src), to="1L", out=str(out), heal=False)
    with pytest.raises(ValueError, match="vocab_size 256"):
        compress(cfg, log=lambda *a: None)
    assert not out.exists()  # nothing written, no wrong tokenizer copied


def test_generate_prompt_longer_than_context_warns(tiny_config, capsys):
    from cherry_mlx.decoding.session import generate_text
    from cherry_mlx.models.loading import load_tokenizer

    model = build_model({**tiny_config, "vocab_size": 4096, "max_position_embeddings": 16})
    mx.eval(model.parameters())
    tok = load_tokenizer(WEIGHTS_DIR / "cherry-tiny")
    list(generate_text(model, tok, "word " * 40, max_tokens=1, raw=True))
    assert "longer than the model's context of 16" in capsys.readouterr().err


def test_tag_on_an_empty_file_says_so(tmp_path):
    from cherry_mlx.selection.tag_report import tag_file

    empty = write(tmp_path / "e.jsonl", "\n\n")
    with pytest.raises(ValueError, match="no examples .* nothing to tag"):
        tag_file(empty, None, plot=False, log=lambda *a: None)


def _answer_sentence_reference(text, cands, question):
    """The definition, evaluated the slow way (every sentence against every candidate)."""
    from cherry_mlx.selection import markers, rules_struct

    sents = rules_struct.sentences(text)
    holding = [(s, e) for s, e in sents if any(s <= c[0] < e for c in cands)]
    cued = [se for se in holding if markers.ANSWER_CUES.search(text[se[0] : se[1]])]
    return (cued or holding or [None])[-1]


def test_answer_sentence_matches_its_definition_and_is_near_linear():
    from cherry_mlx.selection.answer import answer_sentence

    rng = np.random.default_rng(0)
    words = ["Paris", "is", "big.", "so", "the", "answer", "is", "42.", "\n"]
    for _ in range(50):
        text = " ".join(rng.choice(words, size=int(rng.integers(1, 40))))
        cands = [(int(s), int(s) + 1, "factual") for s in rng.integers(0, len(text), size=5)]
        assert answer_sentence(text, cands, None) == _answer_sentence_reference(text, cands, None)
    # one 1M-character turn: ~70k sentences x 70k candidates was ~5e9 checks (minutes); bisect
    n = 70_000
    text = "Paris is big. " * n
    cands = [(i * 14, i * 14 + 5, "factual") for i in range(n)]
    assert answer_sentence(text, cands, None) == ((n - 1) * 14 - 1, n * 14 - 1)  # " Paris is big."


def test_cherry_mlx_weights_moves_the_data_dir(tmp_path):
    code = "from cherry_mlx.data.paths import DEFAULT_DATA_DIR; print(DEFAULT_DATA_DIR)"
    env = {**os.environ, "CHERRY_MLX_WEIGHTS": str(tmp_path / "w")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == str(tmp_path / "w" / "data" / "default")


def test_compress_to_2L_without_loops_needs_no_prelude_or_coda():
    from cherry_mlx.compression.heal import recurrence_of
    from cherry_mlx.compression.merge import plan_groups

    cfg = CompressConfig.from_flat(to="2L")
    groups = plan_groups(8, cfg.to, cfg.factor, cfg.groups)
    rec = recurrence_of(cfg, len(groups))
    assert len(groups) == 2 and rec.loops == 1 and rec.effective_depth == 2


# -- invalid Unicode: data rejected, typed text repaired ----------------------------------------
def test_stdin_prompt_not_utf8_is_repaired_with_a_notice(monkeypatch):
    class Stdin:
        buffer = io.BytesIO(b"caf\xc3\xa9 \xff ok")

    monkeypatch.setattr(sys, "stdin", Stdin())
    err = io.StringIO()
    assert read_stdin_text(notice=err) == "café \ufffd ok"
    assert "not valid UTF-8" in err.getvalue()


def test_repair_text_replaces_escaped_bytes_and_lone_surrogates():
    assert repair_text("ok") == ("ok", False)
    assert repair_text(b"\xff!".decode("utf-8", "surrogateescape")) == ("\ufffd!", True)
    assert repair_text("a\ud800b") == ("a\ufffdb", True)
    assert repair_text(b"caf\xc3\xa9".decode("ascii", "surrogateescape")) == ("café", True)


class _Session:
    """A chat session stand-in: answers by echoing, fails on the word 'boom'."""

    speculative = False
    fed: list = []

    def __init__(self):
        self.messages = []

    def send(self, text):
        self.messages.append({"role": "user", "content": text})
        if "boom" in text:
            raise ValueError("tokenizer exploded\nsecond line")
        self.messages.append({"role": "assistant", "content": text.upper()})
        yield text.upper()

    def stats_text(self):
        return "stats"


def test_chat_xff_line_does_not_lose_the_session():
    from cherry_mlx.decoding.repl import chat_loop

    lines = iter(
        ["hello", b"caf\xff".decode("utf-8", "surrogateescape"), UnicodeDecodeError, "boom", "bye"]
    )

    def read(_prompt):
        line = next(lines, None)
        if line is None:
            raise EOFError
        if line is UnicodeDecodeError:
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
        return line

    s, out, err = _Session(), io.StringIO(), io.StringIO()
    chat_loop(s, read=read, out=out, err=err)
    said = [m["content"] for m in s.messages if m["role"] == "user"]
    assert said == ["hello", "caf\ufffd", "bye"]  # the failing line is dropped, nothing else
    assert "CAF\ufffd" in out.getvalue() and "BYE" in out.getvalue()
    notes = err.getvalue()
    assert "replaced with U+FFFD" in notes and "not valid UTF-8" in notes
    assert "[error: tokenizer exploded; the line was dropped" in notes


def test_loads_json_errors_are_one_line():
    for text in ("{", "[" * 100_000, '"\\udc00"'):
        with pytest.raises(InputError) as err:
            loads_json(text, "x.json")
        assert one_line(err).startswith("x.json: ")


def test_cli_prints_bad_config_json_as_one_line(tmp_path, monkeypatch, capsys):
    from cherry_mlx_cli.main import main

    d = model_dir(tmp_path, "[1, 2]")
    monkeypatch.setattr(sys, "argv", ["cherry-mlx", "info", str(d)])
    with pytest.raises(SystemExit) as ex:
        main()
    err = capsys.readouterr().err
    assert ex.value.code == 2 and "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("cherry-mlx: error:")]
    assert len(lines) == 1 and "holds a JSON list" in lines[0]


def test_chat_command_survives_xff_and_generate_stdin_is_repaired(tmp_path, tiny_config):
    """The real commands: a ``\\xff`` typed in chat is repaired with a notice and the session goes
    on to answer the next line; ``generate -p -`` repairs invalid UTF-8 on stdin."""
    from cherry_mlx_cli.main import app

    cfg = {**tiny_config, "vocab_size": 4096}
    model = build_model(cfg)
    mx.eval(model.parameters())
    path = save_model(model, tmp_path / "m", cfg, tokenizer_dir=WEIGHTS_DIR / "cherry-tiny")
    runner = CliRunner()
    res = runner.invoke(app, ["chat", str(path), "-m", "2"], input=b"caf\xff\n/stats\n/quit\n")
    assert res.exit_code == 0, res.output
    assert "replaced with U+FFFD" in res.output and "last turn" in res.output
    res = runner.invoke(app, ["generate", str(path), "-p", "-", "-m", "2"], input=b"caf\xff\n")
    assert res.exit_code == 0, res.output
    assert "stdin was not valid UTF-8" in res.output
