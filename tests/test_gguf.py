"""GGUF import against transformers' own GGUF loader and llama.cpp's tokenizer.

Small GGUF files are written here with the ``gguf`` package's writer (F32, Q8_0 and Q4_1 tensors,
Llama's Q/K rows permuted the way llama.cpp's converter does it, a byte-level BPE trained in the
test), then read back by ``import_gguf`` and by ``transformers`` (``gguf_file=``).
"""

import json

import mlx.core as mx
import numpy as np
import pytest

from cherry_mlx.models import load_model, load_tokenizer, resolve
from cherry_mlx.models.gguf import cached_import, import_gguf

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
Q = gguf.GGMLQuantizationType

TEXT = "Hello world! 안녕하세요, 세계. Cherry 🍒 on top 😀 — the quick brown fox."
CORPUS = [TEXT, "안녕하세요 반갑습니다 세계 여러분", "the world says hello to the quick fox"] * 20
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)
D, F, H, KV, LAYERS, VOCAB = 64, 128, 4, 2, 2, 320


def _bpe():
    """A byte-level BPE (vocab 320) trained on a tiny Korean/English/emoji corpus."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    data = json.loads(tok.to_str())["model"]
    tokens = [t for t, _ in sorted(data["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["merges"]]
    return tokens, merges


def _spm():
    """A sentencepiece-style vocabulary: specials, the 256 byte tokens, pieces best-first."""
    from tokenizers import SentencePieceBPETokenizer

    sp = SentencePieceBPETokenizer()
    sp.train_from_iterator(CORPUS, vocab_size=200, special_tokens=["<unk>"], show_progress=False)
    vocab = json.loads(sp.to_str())["model"]["vocab"]
    pieces = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t != "<unk>"]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    return tokens, [-float(i) for i in range(len(tokens))], types


def _permute(w, n_head):
    """llama.cpp's converter: HF half-split rotary rows -> interleaved pairs, per head."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def llama3_divisors(theta, dims, factor, low, high, ctx):
    """llama.cpp's converter: per-frequency divisors for Llama 3 RoPE scaling (rope_freqs)."""
    out = []
    for freq in 1.0 / theta ** (np.arange(0, dims, 2) / dims):
        wavelen = 2 * np.pi / freq
        if wavelen < ctx / high:
            out.append(1.0)
        elif wavelen > ctx / low:
            out.append(factor)
        else:
            smooth = (ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write_gguf(
    path, arch="llama", seed=0, vocab_rows=None, tokenizer_model="gpt2", rope_freqs=None
):
    """A 2-layer model; returns the HF-order float32 weights of the F32 tensors."""
    rng = np.random.default_rng(seed)
    if tokenizer_model == "llama":
        tokens, scores, types = _spm()
    else:
        (tokens, merges), scores = _bpe(), None
        types = [3 if t in SPECIALS else 1 for t in tokens]
    vocab_rows = vocab_rows or len(tokens)
    hd = 128 if arch == "qwen3" else D // H  # transformers reads no key_length: Qwen3 default

    def w(*shape, scale=0.15):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(256)
    writer.add_embedding_length(D)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(F)
    writer.add_head_count(H)
    writer.add_head_count_kv(KV)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(hd)
    if arch == "qwen3":
        writer.add_key_length(hd)
        writer.add_value_length(hd)
    writer.add_tokenizer_model(tokenizer_model)
    if scores is None:  # sentencepiece files name no byte-level pre-tokenizer
        writer.add_tokenizer_pre("qwen2" if arch.startswith("qwen") else "llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if scores is None:
        writer.add_token_merges(merges)
    else:
        writer.add_token_scores(scores)
        writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(scores is not None)
    writer.add_chat_template(TEMPLATE)

    exact = {}

    def add(name, array, qtype=Q.F32):
        if qtype == Q.F32:
            writer.add_tensor(name, array)
            exact[name] = array
        else:
            writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)

    add("token_embd.weight", w(vocab_rows, D), Q.Q8_0)
    if rope_freqs is not None:
        add("rope_freqs.weight", rope_freqs)
    add("output_norm.weight", 1 + w(D, scale=0.3))
    add("output.weight", w(vocab_rows, D), Q.Q4_1)
    permute = arch == "llama"
    for i in range(LAYERS):
        p = f"blk.{i}."
        q, k = w(H * hd, D), w(KV * hd, D)
        exact[f"hf.{i}.q"] = q
        add(p + "attn_q.weight", _permute(q, H) if permute else q)
        add(p + "attn_k.weight", _permute(k, KV) if permute else k, Q.Q8_0)
        add(p + "attn_v.weight", w(KV * hd, D), Q.Q4_1)
        add(p + "attn_output.weight", w(D, H * hd), Q.Q8_0)
        if arch == "qwen2":
            add(p + "attn_q.bias", w(H * hd, scale=0.3))
            add(p + "attn_k.bias", w(KV * hd, scale=0.3))
            add(p + "attn_v.bias", w(KV * hd, scale=0.3))
        if arch == "qwen3":
            add(p + "attn_q_norm.weight", 1 + w(hd, scale=0.3))
            add(p + "attn_k_norm.weight", 1 + w(hd, scale=0.3))
        add(p + "attn_norm.weight", 1 + w(D, scale=0.3))
        add(p + "ffn_norm.weight", 1 + w(D, scale=0.3))
        add(p + "ffn_gate.weight", w(F, D), Q.Q4_1)
        add(p + "ffn_up.weight", w(F, D), Q.Q8_0)
        add(p + "ffn_down.weight", w(D, F), Q.Q4_1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return exact


@pytest.fixture(scope="module", params=["llama", "qwen2", "qwen3"])
def gguf_model(request, tmp_path_factory):
    arch = request.param
    root = tmp_path_factory.mktemp(f"gguf-{arch}")
    exact = write_gguf(root / "tiny.gguf", arch)
    out = import_gguf(root / "tiny.gguf", root / "hf")
    return arch, root, out, exact


def test_logits_match_transformers_gguf_loader(gguf_model):
    arch, root, out, _ = gguf_model
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        root, gguf_file="tiny.gguf", dtype=torch.float32
    ).eval()
    ids = np.array([[1, 17, 250, 3, 99, 42, 7, 7, 300, 5, 0, 64, 33]])
    with torch.no_grad():
        expected = ref(torch.from_numpy(ids)).logits.numpy()
    model, cfg = load_model(out)
    assert cfg["model_type"] == arch
    ours = np.array(model(mx.array(ids.astype(np.int32))))
    assert np.abs(ours - expected).max() <= 1e-4


def test_llama3_rope_scaling_recovered_from_rope_freqs(tmp_path):
    """Llama 3.1+ files carry only per-frequency divisors; the scaling comes back and the logits
    equal transformers' Llama with that rope_scaling on the same (GGUF-dequantised) weights."""
    params = dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0)
    params["original_max_position_embeddings"] = 8192
    divisors = llama3_divisors(10000.0, D // H, 8.0, 1.0, 4.0, 8192)
    assert 1.0 < divisors[-2] < 8.0  # the test covers all three regimes
    write_gguf(tmp_path / "l3.gguf", rope_freqs=divisors)
    out = import_gguf(tmp_path / "l3.gguf", tmp_path / "hf")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rope_scaling"] == {"rope_type": "llama3", **params}

    plain = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="l3.gguf", dtype=torch.float32
    )
    ref_cfg = plain.config
    ref_cfg.rope_parameters = {"rope_type": "llama3", "rope_theta": 10000.0, **params}
    ref = transformers.LlamaForCausalLM(ref_cfg).float().eval()
    ref.load_state_dict(plain.state_dict())
    ids = np.array([[1, 17, 250, 3, 99, 42, 7, 7, 300, 5, 0, 64, 33]])
    with torch.no_grad():
        expected = ref(torch.from_numpy(ids)).logits.numpy()
        unscaled = plain(torch.from_numpy(ids)).logits.numpy()
    model, _ = load_model(out)
    ours = np.array(model(mx.array(ids.astype(np.int32))))
    assert np.abs(ours - expected).max() <= 1e-4
    assert np.abs(ours - unscaled).max() > 1e-2  # the scaling matters on these positions


def test_rotary_permutation_is_undone(gguf_model):
    """An F32 q_proj comes back bit-exact in the Hugging Face row order."""
    _, _, out, exact = gguf_model
    weights = mx.load(str(out / "model.safetensors"))
    for i in range(LAYERS):
        got = np.array(weights[f"model.layers.{i}.self_attn.q_proj.weight"])
        assert np.array_equal(got, exact[f"hf.{i}.q"])


def test_token_ids_match_transformers(gguf_model):
    _, root, out, _ = gguf_model
    ref = transformers.AutoTokenizer.from_pretrained(root, gguf_file="tiny.gguf")
    ours = load_tokenizer(out)
    text = TEXT + "<|im_end|>"
    ids = ours.encode(text)
    assert ids == ref(text)["input_ids"]
    assert ids[-1] == 2 and len(ids) < len(text.encode())  # special whole, merges used
    assert ours.decode(ids) == text


def test_folder_loads_in_mlx_lm_with_chat_template(gguf_model):
    from mlx_lm import load

    _, _, out, _ = gguf_model
    model, tok = load(str(out))
    ours, _ = load_model(out)
    x = mx.array([[1, 5, 9, 250]])
    assert np.abs(np.array(model(x)) - np.array(ours(x))).max() <= 1e-5
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n"
    assert tok.eos_token_id == 2


def test_sentencepiece_token_ids_match_transformers(tmp_path):
    """tokenizer.ggml.model = llama: merges recovered from scores, byte fallback, BOS added."""
    write_gguf(tmp_path / "spm.gguf", tokenizer_model="llama")
    out = import_gguf(tmp_path / "spm.gguf", tmp_path / "hf")
    ref = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="spm.gguf")
    ours = load_tokenizer(out)
    text = TEXT + " 🎉 밥"  # characters the vocabulary lacks: byte fallback
    ids = ours.encode(text)
    assert ids == ref(text)["input_ids"]
    assert ids[0] == 1 and "<0xF0>" in ours.convert_ids_to_tokens(ids)
    assert ours.decode(ids, skip_special_tokens=True) == text


def test_dtype_option(tmp_path):
    write_gguf(tmp_path / "m.gguf")
    out = import_gguf(tmp_path / "m.gguf", tmp_path / "bf16", dtype="bfloat16")
    weights = mx.load(str(out / "model.safetensors"))
    assert {v.dtype for v in weights.values()} == {mx.bfloat16}
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_gguf_path_accepted_as_model_and_cached(tmp_path):
    write_gguf(tmp_path / "m.gguf")
    first = resolve(tmp_path / "m.gguf")
    assert first == tmp_path / "m-hf" and (first / "config.json").is_file()
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert cached_import(tmp_path / "m.gguf") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rewritten


def test_cache_never_replaces_a_folder_it_did_not_write(tmp_path, monkeypatch):
    import cherry_mlx.models.gguf as gguf_module

    monkeypatch.setattr(gguf_module, "IMPORTED_DIR", tmp_path / "imported")
    write_gguf(tmp_path / "m.gguf")
    (tmp_path / "m-hf").mkdir()
    (tmp_path / "m-hf" / "notes.txt").write_text("mine")
    assert resolve(str(tmp_path / "m.gguf")) == tmp_path / "imported" / "m"
    assert [p.name for p in (tmp_path / "m-hf").iterdir()] == ["notes.txt"]


def _no_output(tmp_path):
    return [p.name for p in tmp_path.iterdir() if p.suffix != ".gguf"]


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate", "truncated"),
        ("arch", "architecture 'gpt2' is not supported.*llama, mistral, qwen2, qwen3"),
        ("tokenizer", "tokenizer type 'bert' is not supported"),
        ("vocab", "tokenizer has 320 tokens but the model's vocabulary only 256"),
        ("quant", "stored as TQ1_0.*Q4_1.*Q4_K"),
    ],
)
def test_bad_files_fail_in_one_line_and_write_nothing(tmp_path, damage, message):
    path = tmp_path / "bad.gguf"
    if damage == "arch":
        write_gguf(path, arch="gpt2")
    elif damage == "tokenizer":
        write_gguf(path, tokenizer_model="bert")
    elif damage == "vocab":
        write_gguf(path, vocab_rows=256)
    elif damage == "quant":
        writer = gguf.GGUFWriter(str(path), "llama")
        a = np.ones((4, 256), np.float32)
        writer.add_tensor("token_embd.weight", gguf.quants.quantize(a, Q.TQ1_0), raw_dtype=Q.TQ1_0)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    else:
        write_gguf(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ValueError, match=message) as err:
        import_gguf(path, tmp_path / "out")
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert _no_output(tmp_path) == []
