"""Chat: template round trip with governance tokens, KV cache across turns, Ctrl-C, the CLI."""

import mlx.core as mx
import pytest
from typer.testing import CliRunner

from cherry_mlx.decoding.chat import ChatConfig, ChatSession, render
from cherry_mlx.decoding.generate import generate_tokens
from cherry_mlx.models import build_model, load_tokenizer, save_model
from cherry_mlx.models.loading import WEIGHTS_DIR

TOKENIZER_DIR = WEIGHTS_DIR / "cherry-tiny"  # the shipped tokenizer and chat template


@pytest.fixture
def served(tiny_config, tmp_path):
    """A tiny random model with MTP heads, saved with the cherry-tiny tokenizer."""
    cfg = {**tiny_config, "vocab_size": 4096, "mtp": {"num_heads": 2}}
    model = build_model(cfg)
    mx.eval(model.parameters())
    path = save_model(model, tmp_path / "m", cfg, tokenizer_dir=TOKENIZER_DIR)
    return model, load_tokenizer(path), path


def test_chat_template_round_trip_with_governance_tokens():
    tok = load_tokenizer(TOKENIZER_DIR)
    messages = [
        {"role": "system", "content": "간단히 답하세요."},
        {"role": "user", "content": "서울의 인구는?"},
        {"role": "assistant", "content": "약 940만 명입니다."},
        {"role": "user", "content": "And Busan?"},
    ]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = render(tok, messages)
    assert tok.decode(ids, skip_special_tokens=False) == text
    for piece in (
        "<|spartan_system|>",
        "<|spartan_user|>",
        "<|spartan_assistant|>",
        "<|spartan_end|>",
    ):
        pid = tok.convert_tokens_to_ids(piece)
        assert ids.count(pid) == text.count(piece) > 0  # one id per governance token
    assert tok.convert_tokens_to_ids("<|spartan_end|>") in tok.eos_token_ids


def _answer(session, text):
    return "".join(session.send(text))


def _uncached(model, prompt, n):
    return list(generate_tokens(model, prompt, max_tokens=n, stop=[2]))


@pytest.mark.parametrize("speculative", [False, True])
def test_cache_kept_across_turns_equals_uncached(served, speculative):
    """Turn 2 prefills only its new tokens (turn 1, answer included, comes from the cache) and
    answers exactly as a fresh model given the same full prompt."""
    model, tok, _ = served
    s = ChatSession(model, tok, ChatConfig(max_tokens=12, speculative=speculative))
    _answer(s, "안녕하세요")
    first, fed1 = list(s.history), len(s.fed)
    assert fed1 >= len(first) - 1  # all of turn 1 but perhaps its last token (emitted, not fed)
    _answer(s, "서울은 어디에 있나요?")
    assert s.last_prompt[: len(first)] == first
    assert s.last.prompt_tokens == len(s.last_prompt) - fed1
    assert s.last_tokens == _uncached(model, s.last_prompt, 12)
    assert all(c.offset == len(s.fed) for c in s.cache)
    assert "<|spartan_user|>" in tok.decode(s.last_prompt[len(first) :], skip_special_tokens=False)


def test_interrupted_answer_keeps_session_consistent(served):
    model, tok, _ = served
    s = ChatSession(model, tok, ChatConfig(max_tokens=40))
    stream = s.send("hello")
    next(stream), next(stream)
    stream.close()  # what Ctrl-C does in the CLI
    assert all(c.offset == len(s.fed) for c in s.cache)
    assert s.messages[-1]["role"] == "assistant"
    _answer(s, "again")
    assert s.last_tokens == _uncached(model, s.last_prompt, 40)


def test_chat_and_generate_commands(served):
    from cherry_mlx_cli.main import app

    _, _, path = served
    runner = CliRunner()
    res = runner.invoke(
        app, ["chat", str(path), "--max-tokens", "8"], input="hello\n/stats\n/reset\nagain\n/quit\n"
    )
    assert res.exit_code == 0, res.output
    assert "self-speculative" in res.output and "[conversation reset]" in res.output
    assert "tok/s" in res.output and "acceptance" in res.output
    res = runner.invoke(app, ["chat", str(path), "--no-speculative", "-m", "4"], input="hi\n")
    assert res.exit_code == 0 and "plain decoding" in res.output  # EOF leaves cleanly
    res = runner.invoke(
        app,
        [
            "generate",
            str(path),
            "-p",
            "hello",
            "-m",
            "6",
            "--temp",
            "0.7",
            "--top-k",
            "20",
            "--seed",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output


def test_ctrl_c_stops_an_answer_not_the_session(served, tmp_path):
    """A real process: SIGINT (what Ctrl-C sends) during a long answer prints [stopped] and the
    session goes on (/stats answers, /quit exits 0)."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    model, _, path = served
    model.lm_head.weight[2] = 0.0  # the end-of-turn id never wins greedy: the answer runs on
    save_model(model, path, {**model_config_of(model)}, tokenizer_dir=TOKENIZER_DIR)
    env = {**os.environ, "CHERRY_MLX_QUIET": "1", "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cherry_mlx_cli.main",
            "chat",
            str(path),
            "-m",
            "100000",
            "--no-speculative",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    buf = []
    reader = threading.Thread(target=lambda: buf.extend(iter(lambda: p.stdout.read(1), b"")))
    reader.start()

    def wait_for(seen, timeout=600):  # a safety net for a hung process, not a timing
        t0 = time.time()
        while not seen(b"".join(buf).decode(errors="replace")):
            assert time.time() - t0 < timeout and p.poll() is None, b"".join(buf)
            time.sleep(0.05)

    try:
        wait_for(lambda out: out.endswith(">>> "))
        p.stdin.write(b"hello\n")
        p.stdin.flush()
        # the event: the answer has started streaming (text after the prompt; the answer cannot
        # end, its end-of-turn id never wins), so SIGINT lands mid-answer however slow the box
        wait_for(lambda out: not out.endswith(">>> "))
        p.send_signal(signal.SIGINT)
        wait_for(lambda out: "[stopped]" in out)
        p.stdin.write(b"/stats\n/quit\n")
        p.stdin.flush()
        assert p.wait(timeout=60) == 0
    finally:
        if p.poll() is None:
            p.kill()
        reader.join(timeout=5)
    out = b"".join(buf).decode(errors="replace")
    assert "last turn" in out and "tok/s" in out


def model_config_of(model):
    from cherry_mlx.models.loading import model_config

    return model_config(model)


@pytest.mark.parametrize("speculative", [False, True])
def test_streamed_text_is_the_decoded_answer(served, speculative):
    """What chat and generate print is exactly the tokenizer's decoding of the tokens generated
    (a random model's answer is non-empty gibberish, never silently dropped)."""
    from cherry_mlx.decoding.session import generate_text

    model, tok, _ = served
    s = ChatSession(model, tok, ChatConfig(max_tokens=12, speculative=speculative))
    text = _answer(s, "hello")
    answer = [t for t in s.last_tokens if t not in tok.eos_token_ids]
    assert answer and text == tok.decode(answer)
    pieces = [p for p, _ in generate_text(model, tok, "hello", max_tokens=12, speculative=False)]
    ids = render(tok, [{"role": "user", "content": "hello"}])
    plain = [t for t in _uncached(model, ids, 12) if t not in tok.eos_token_ids]
    assert "".join(pieces) == tok.decode(plain)


def test_chat_unknown_command_and_context_note(served, tmp_path):
    # a mistyped /command used to be sent to the model as a message; a conversation running past
    # the trained context used to go on without a word
    from cherry_mlx_cli.main import app

    model, _, _ = served
    cfg = {**dict(model.args.__dict__), "max_position_embeddings": 16}
    cfg = {k: v for k, v in cfg.items() if k not in ("layer_types",)}
    small = build_model(cfg)
    mx.eval(small.parameters())
    path = save_model(small, tmp_path / "short", cfg, tokenizer_dir=TOKENIZER_DIR)
    res = CliRunner().invoke(
        app,
        ["chat", str(path), "--no-speculative", "-m", "12"],
        input="/stat\nhello\nagain\n/stats\n",
    )
    assert res.exit_code == 0, res.output
    assert "unknown command /stat: use /reset, /stats or /quit" in res.output
    assert res.output.count("longer than the model's context of 16") == 1


def test_generate_without_model_names_the_run_it_picked(served, tmp_path, monkeypatch):
    # without MODEL the latest run is used (possibly one still training): say which
    import shutil

    from cherry_mlx_cli.main import app

    _, _, path = served
    shutil.copytree(path, tmp_path / "runs" / "picked")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["generate", "-p", "hi", "-m", "2", "--no-speculative"])
    assert res.exit_code == 0, res.output
    assert "model: runs/picked (the latest run" in res.output


def test_serving_options_checked(served, tiny_config, tmp_path):
    # -m 0 used to generate one token, --num-draft on a model without MTP heads was ignored
    from cherry_mlx_cli.main import app

    _, _, path = served
    plain = build_model(tiny_config)
    mx.eval(plain.parameters())
    ppath = save_model(plain, tmp_path / "plain", tiny_config, tokenizer_dir=TOKENIZER_DIR)
    runner = CliRunner()
    for args, message in [
        ([str(path), "-p", "hi", "-m", "0"], "--max-tokens 0 must be >= 1"),
        ([str(ppath), "-p", "hi", "--num-draft", "1"], "--num-draft 1 needs a model with MTP"),
        ([str(path), "-p", "hi", "--top-k", "-1"], "--top-k -1 must be >= 0"),
    ]:
        res = runner.invoke(app, ["generate", *args])  # main() prints it as one line
        assert isinstance(res.exception, ValueError) and message in str(res.exception)
    res = runner.invoke(app, ["chat", str(path), "-m", "0"], input="hi\n")
    assert isinstance(res.exception, ValueError)
    assert "--max-tokens 0 must be >= 1" in str(res.exception)


def test_reset_clears_last_turn_but_keeps_session_totals(served):
    from cherry_mlx.decoding.generate import GenerationStats

    model, tok, _ = served
    s = ChatSession(model, tok, ChatConfig(max_tokens=6, speculative=False))
    _answer(s, "hello")
    generated = s.total.generated
    assert s.last.generated > 0 and generated >= s.last.generated
    s.reset()
    assert s.last == GenerationStats() and len(s.fed) == 0
    assert s.total.generated == generated  # the session's totals survive /reset
