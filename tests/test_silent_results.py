"""Results that used to be silently wrong now are right or say so; invalid Unicode typed or piped
is repaired with a notice and never ends a chat session."""

import io
import math
import os
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest
from _input_helpers import one_line, write
from typer.testing import CliRunner

from cherry_mlx._io import InputError, loads_json, read_stdin_text, repair_text
from cherry_mlx.compression.config import CompressConfig
from cherry_mlx.compression.heal import gap_text
from cherry_mlx.models import build_model, save_model
from cherry_mlx.models.loading import WEIGHTS_DIR
from cherry_mlx.training.prepare import check_vocab


# -- silent wrong results -----------------------------------------------------------------------
def test_no_heal_message_compares_merged_and_source_losses():
    # a measured case: merged 7.75 > source 7.55 must never read "did not raise the loss"
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
