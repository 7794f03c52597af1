"""Sovereign tokenizer: special tokens, Korean coverage, HF export == sentencepiece, loaders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sentencepiece as spm
from _tokenizer_helpers import train_small
from transformers import AutoTokenizer

from cherry_mlx.tokenizer import (
    BOS,
    EOS,
    PAD,
    SPECIAL_IDS,
    SPECIAL_PIECES,
    TokenizerConfig,
    ks_x_1001_hangul,
    train_sentencepiece,
)
from cherry_mlx.tokenizer.inspect import byte_fallback_count

TINY_DIR = Path(__file__).resolve().parents[1] / "weights" / "cherry-tiny"

TEXTS = [
    "Hello, world!  Two spaces,\nnew line\ttab and trailing space ",
    "대한민국 헌법 제1조 ① 대한민국은 민주공화국이다.",
    "The value is 3.14159; 2026-11-24 is a date, x = {'a': [1, 2]}",
    "emoji 😀 and rare syllables 똠방각하 뷁 and Ünïcödé",
    f"{BOS}<|spartan_user|>질문<|spartan_end|><|spartan_assistant|><|spartan_think|>생각"
    f"<|spartan_think_end|>답<|spartan_end|>",
    "<|spartan_atcha|>아차, 틀렸다.<|spartan_jamkkan|>잠깐<|spartan_verified|>",
    "   leading spaces and <|spartan_refuse|>refusal<|spartan_safe|>",
    "",
]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    return train_small(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def hf(tok_dir):
    return AutoTokenizer.from_pretrained(str(tok_dir))


@pytest.fixture(scope="module")
def sp(tok_dir):
    return spm.SentencePieceProcessor(model_file=str(tok_dir / "tokenizer.model"))


def test_ks_x_1001_is_the_euc_kr_hangul_block():
    # independent reference: KS X 1001 places its Hangul in rows 0xB0..0xC8, columns 0xA1..0xFE
    block = {bytes([r, c]).decode("euc-kr") for r in range(0xB0, 0xC9) for c in range(0xA1, 0xFF)}
    got = ks_x_1001_hangul()
    assert len(got) == 2350 == len(block)
    assert set(got) == block
    assert "가" in got and "힝" in got and "똠" not in got and "뷁" not in got


def test_special_tokens_design():
    assert len(SPECIAL_PIECES) == 24 == len(set(SPECIAL_PIECES))
    assert all(p.startswith("<|spartan_") and p.endswith("|>") for p in SPECIAL_PIECES)
    for named in ("<|spartan_think|>", "<|spartan_tool|>", "<|spartan_refuse|>"):  # the paper's
        assert named in SPECIAL_PIECES
    assert sorted(SPECIAL_IDS.values()) == list(range(1, 25))


def test_special_ids_fixed_and_never_split(hf, sp):
    for piece, i in SPECIAL_IDS.items():
        assert sp.piece_to_id(piece) == i
        assert hf.convert_tokens_to_ids(piece) == i
        # glued to text on both sides, still exactly one token, in both implementations
        text = f"ab{piece}cd"
        for ids in (sp.encode(text), hf(text, add_special_tokens=False)["input_ids"]):
            assert ids.count(i) == 1
            assert sum(1 for t in ids if 1 <= t <= 24) == 1
    assert (hf.bos_token, hf.eos_token, hf.pad_token) == (BOS, EOS, PAD)
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (1, 2, 3)


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_and_hf_equals_sentencepiece(hf, sp, text):
    ids_sp = sp.encode(text)
    ids_hf = hf(text, add_special_tokens=False)["input_ids"]
    assert ids_hf == ids_sp
    assert sp.decode(ids_sp) == text  # identity normalisation: exact round trip
    assert hf.decode(ids_hf) == text
    # the offsets mapping tiles the text exactly (what GT span mapping relies on)
    offs = hf(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    covered = "".join(text[a:b] for k, (a, b) in enumerate(offs) if k == 0 or offs[k - 1] != (a, b))
    assert covered == text


def test_hf_equals_sentencepiece_on_real_prose(hf, sp):
    from pydoc_data.topics import topics

    for key in sorted(topics)[:12]:
        text = topics[key][:3000]
        assert hf(text, add_special_tokens=False)["input_ids"] == sp.encode(text), key


def test_korean_never_falls_back_to_bytes(hf):
    # text the tokenizer never saw; every syllable is in KS X 1001
    text = "봄바람이 살랑살랑 불어오는 오후, 우리는 경복궁 앞 찻집에서 따뜻한 보리차를 마셨다."
    pieces = hf.convert_ids_to_tokens(hf(text, add_special_tokens=False)["input_ids"])
    assert byte_fallback_count(pieces) == 0
    # a syllable outside KS X 1001 does fall back (3 UTF-8 bytes), never to <unk>
    pieces = hf.convert_ids_to_tokens(hf("똠", add_special_tokens=False)["input_ids"])
    assert pieces == ["<0xEB>", "<0x98>", "<0xA0>"]


def test_plain_encode_adds_bos(hf):
    assert hf("hi")["input_ids"][0] == 1
    assert hf("hi", add_special_tokens=False)["input_ids"][0] != 1


def test_chat_template_renders_every_part(hf):
    tools = [{"type": "function", "function": {"name": "calc", "parameters": {}}}]
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U"},
        {
            "role": "assistant",
            "content": "A",
            "reasoning_content": "R",
            "tool_calls": [
                {"type": "function", "function": {"name": "calc", "arguments": {"x": "1+1"}}}
            ],
        },
        {"role": "tool", "content": "2"},
        {"role": "assistant", "content": "", "refusal": "no"},
    ]
    got = hf.apply_chat_template(messages, tools=tools, tokenize=False)
    want = (
        '<|spartan_bos|><|spartan_system|>S<|spartan_tools|>[{"type": "function", "function": '
        '{"name": "calc", "parameters": {}}}]<|spartan_tools_end|><|spartan_end|>'
        "<|spartan_user|>U<|spartan_end|>"
        "<|spartan_assistant|><|spartan_think|>R<|spartan_think_end|>A"
        '<|spartan_tool|>{"name": "calc", "arguments": {"x": "1+1"}}<|spartan_tool_end|>'
        "<|spartan_end|><|spartan_tool_result|>2<|spartan_end|>"
        "<|spartan_assistant|><|spartan_refuse|>no<|spartan_end|>"
    )
    assert got == want
    prompt = hf.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|spartan_user|>U<|spartan_end|><|spartan_assistant|>")
    # arguments given as a JSON string are embedded, not double-encoded
    m = [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1}'}}],
        }
    ]
    assert '<|spartan_tool|>{"name": "f", "arguments": {"a": 1}}' in hf.apply_chat_template(
        m, tokenize=False
    )


def test_mlx_lm_wrapper_loads_and_streams(tok_dir):
    from mlx_lm.tokenizer_utils import SPMStreamingDetokenizer
    from mlx_lm.utils import load_tokenizer

    tw = load_tokenizer(tok_dir)
    assert tw.eos_token_ids == {2}
    assert isinstance(tw.detokenizer, SPMStreamingDetokenizer)
    text = "서울은 수도 <|spartan_think|> and  two spaces"
    ids = tw.encode(text)
    assert ids[0] == 1
    det = tw.detokenizer
    det.reset()
    for t in ids[1:]:
        det.add_token(t)
    det.finalize()
    assert det.text == text
    chat = tw.apply_chat_template([{"role": "user", "content": "안녕"}], add_generation_prompt=True)
    assert chat[-1] == SPECIAL_IDS["<|spartan_assistant|>"]


def test_shipped_tiny_tokenizer_matches_preset():
    from cherry_mlx.models.loading import load_tokenizer

    cfg = json.loads((TINY_DIR / "config.json").read_text())
    tw = load_tokenizer("cherry-tiny")
    hf_tok = tw._tokenizer
    assert len(hf_tok) == cfg["vocab_size"] == 4096
    assert (cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (
        hf_tok.bos_token_id,
        hf_tok.eos_token_id,
        hf_tok.pad_token_id,
    )
    sp = spm.SentencePieceProcessor(model_file=str(TINY_DIR / "tokenizer.model"))
    for text in TEXTS:
        assert hf_tok(text, add_special_tokens=False)["input_ids"] == sp.encode(text)
    pieces = hf_tok.convert_ids_to_tokens(
        hf_tok("한국어 문장입니다", add_special_tokens=False)["input_ids"]
    )
    assert byte_fallback_count(pieces) == 0


def test_vocab_too_small_is_a_clear_error():
    with pytest.raises(ValueError, match="vocab-size"):
        train_sentencepiece(["some text"], TokenizerConfig(vocab_size=1000))


def test_cli_train(tmp_path):
    from cherry_mlx_cli.main import app
    from typer.testing import CliRunner

    corpus = tmp_path / "c.txt"
    corpus.write_text("안녕하세요 세계\nhello world\n" * 50, encoding="utf-8")
    out = tmp_path / "tok"
    res = CliRunner().invoke(
        app,
        [
            "tokenizer",
            "train",
            "--data",
            str(corpus),
            "--vocab-size",
            "2900",
            "--builtin-english",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"):
        assert (out / f).is_file()
    assert len(AutoTokenizer.from_pretrained(str(out))) == 2900


def test_presets_share_one_tokenizer():
    """cherry-48l (the default) and cherry-tiny must tokenize alike: runs of either compare, and the
    refresh command writes one of them."""
    from cherry_mlx.models.presets import DEFAULT_PRESET, TINY_PRESET, WEIGHTS_DIR

    for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json"):
        a = (WEIGHTS_DIR / DEFAULT_PRESET / name).read_bytes()
        assert a == (WEIGHTS_DIR / TINY_PRESET / name).read_bytes(), name
