"""Every GGUF tensor type cherry-mlx reads, against llama.cpp's own numpy decoders (the ``gguf``
package) and transformers' GGUF loader.

Where the ``gguf`` package can quantise a type (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) its writer makes
the blocks; for the K and IQ4 types it cannot, so the blocks are random bytes with sane float16
scales: every bit pattern is a valid block, and the references decode them independently.
"""

import mlx.core as mx
import numpy as np
import pytest

from cherry_mlx.models import load_model, load_tokenizer
from cherry_mlx.models.gguf import import_gguf
from cherry_mlx.models.gguf_quants import BLOCKS, dequantize

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
Q = gguf.GGMLQuantizationType

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]
TYPES += ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]
# byte offsets of the float16 scale fields, and a scale giving weights of about 0.1
F16_FIELDS = {
    "Q2_K": ((80, 82), 0.005), "Q3_K": ((108,), 0.003), "Q4_K": ((0, 2), 5e-4),
    "Q5_K": ((0, 2), 2e-4), "Q6_K": ((208,), 1e-4), "IQ4_NL": ((0,), 2e-3),
    "IQ4_XS": ((0,), 1e-4),
}  # fmt: skip
TEXT = "Hello world! 안녕하세요, 세계. Cherry 🍒 on top 😀"
D, F, H, KV, LAYERS = 256, 256, 4, 2, 1
TOKENS = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + list("▁abcdefgh")


def _type_id(name):
    return next(k for k, v in BLOCKS.items() if v[0] == name)


def quantised(name, rows, cols, rng):
    """(rows, cols) values as ``name`` blocks: uint8 (rows, cols / block * block_bytes)."""
    if name not in F16_FIELDS:
        x = (rng.standard_normal((rows, cols)) * 0.1).astype(np.float32)
        return gguf.quants.quantize(x, Q[name])
    _, block, nbytes = BLOCKS[_type_id(name)]
    n = rows * cols // block
    raw = rng.integers(0, 256, (n, nbytes), dtype=np.uint8)
    fields, scale = F16_FIELDS[name]
    for at in fields:
        d = (rng.standard_normal(n) * scale).astype(np.float16)
        raw[:, at : at + 2] = d.view(np.uint8).reshape(n, 2)
    return raw.reshape(rows, -1)


def write(path, qtype, seed=0, kv_meta=KV):
    """A 1-layer Llama whose matrices are all ``qtype`` (norms F32), sentencepiece vocabulary;
    ``kv_meta`` is the key/value head count the metadata claims."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    for add, value in (
        (writer.add_context_length, 256),
        (writer.add_embedding_length, D),
        (writer.add_block_count, LAYERS),
        (writer.add_feed_forward_length, F),
        (writer.add_head_count, H),
        (writer.add_head_count_kv, kv_meta),
        (writer.add_layer_norm_rms_eps, 1e-6),
        (writer.add_rope_freq_base, 10000.0),
        (writer.add_tokenizer_model, "llama"),
        (writer.add_token_list, TOKENS),
        (writer.add_token_scores, [-float(i) for i in range(len(TOKENS))]),
        (writer.add_token_types, [2, 3, 3] + [6] * 256 + [1] * (len(TOKENS) - 259)),
        (writer.add_unk_token_id, 0),
        (writer.add_bos_token_id, 1),
        (writer.add_eos_token_id, 2),
    ):
        add(value)

    def mat(name, rows, cols):
        writer.add_tensor(name, quantised(qtype, rows, cols, rng), raw_dtype=Q[qtype])

    vocab = len(TOKENS)
    mat("token_embd.weight", vocab, D)
    writer.add_tensor("output_norm.weight", (1 + rng.standard_normal(D) * 0.3).astype(np.float32))
    mat("output.weight", vocab, D)
    for i in range(LAYERS):
        p = f"blk.{i}."
        for part, rows, cols in (
            ("attn_q", H * D // H, D),
            ("attn_k", KV * D // H, D),
            ("attn_v", KV * D // H, D),
            ("attn_output", D, D),
            ("ffn_gate", F, D),
            ("ffn_up", F, D),
            ("ffn_down", D, F),
        ):
            mat(p + part + ".weight", rows, cols)
        for norm in ("attn_norm", "ffn_norm"):
            w = (1 + rng.standard_normal(D) * 0.3).astype(np.float32)
            writer.add_tensor(p + norm + ".weight", w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("name", TYPES)
def test_decoder_is_bit_exact_against_gguf_package(name):
    rng = np.random.default_rng(1)
    raw = quantised(name, 64, 512, rng)
    expected = gguf.quants.dequantize(raw, Q[name]).reshape(-1)
    got = np.array(dequantize(mx.array(raw.reshape(-1)), name))
    assert np.isfinite(expected).all() and np.abs(expected).max() > 0
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("name", TYPES)
def test_import_matches_transformers_gguf_loader(name, tmp_path):
    write(tmp_path / "m.gguf", name)
    out = import_gguf(tmp_path / "m.gguf", tmp_path / "hf")
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="m.gguf", dtype=torch.float32
    ).eval()
    ids = np.array([[1, 17, 250, 3, 99, 42, 7, 7, 260, 5, 0, 264, 33]])
    with torch.no_grad():
        expected = ref(torch.from_numpy(ids)).logits.numpy()
    model, _ = load_model(out)
    ours = np.array(model(mx.array(ids.astype(np.int32))))
    assert np.abs(expected).max() > 0.1  # the weights are not negligible
    assert np.abs(ours - expected).max() <= 1e-4
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    assert load_tokenizer(out).encode(TEXT) == tok(TEXT)["input_ids"]


def _no_output(tmp_path):
    return [p.name for p in tmp_path.iterdir() if p.suffix != ".gguf"]


def _patch_type(path, tensor, type_id):
    """Rewrite one tensor's type id in the header."""
    data = bytearray(path.read_bytes())
    at = data.index(tensor.encode()) + len(tensor)
    n_dims = int.from_bytes(data[at : at + 4], "little")
    at += 4 + 8 * n_dims
    data[at : at + 4] = type_id.to_bytes(4, "little")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        ("unknown type", "tensor blk.0.attn_q.weight is stored as type 99, which cherry-mlx"),
        ("refused type", "stored as IQ2_XXS, which cherry-mlx cannot dequantise; use a .*Q4_K"),
        ("truncated block", "truncated"),
        ("tiling", "tensor blk.0.attn_q.weight has shape .* which Q2_K blocks of 256 cannot"),
        (
            "shape",
            "tensor model.layers.0.self_attn.k_proj.weight has shape .128, 256., "
            "but the config implies .64, 256.",
        ),
    ],
)
def test_bad_tensors_fail_in_one_line_and_write_nothing(tmp_path, damage, message):
    path = tmp_path / "bad.gguf"
    write(path, "Q4_K")
    if damage == "unknown type":
        _patch_type(path, "blk.0.attn_q.weight", 99)
    elif damage == "refused type":
        _patch_type(path, "blk.0.attn_q.weight", _type_id("Q4_K") + 4)  # 16: IQ2_XXS
    elif damage == "tiling":
        _patch_type(path, "blk.0.attn_q.weight", _type_id("Q2_K"))
        data = bytearray(path.read_bytes())  # 256 columns -> 255: no whole block
        at = data.index(b"blk.0.attn_q.weight") + len("blk.0.attn_q.weight") + 4
        data[at : at + 8] = (255).to_bytes(8, "little")
        path.write_bytes(bytes(data))
    elif damage == "shape":  # the metadata claims 1 key/value head, the tensors carry 2
        write(path, "Q4_K", kv_meta=1)
    else:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 100])  # the last tensor loses part of a block
    with pytest.raises(ValueError, match=message) as err:
        import_gguf(path, tmp_path / "out")
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert _no_output(tmp_path) == []
