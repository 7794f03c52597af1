"""Phi-3 and Gemma 3 (text): random checkpoints written by transformers, against transformers and
plain mlx-lm; Gemma 3's sliding/global layers through merging and looping.

The sliding window is 4 tokens and the sequences 18, so the window matters in every sliding layer.
"""

import json
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest

from cherry_mlx.compression.merge import merge_model
from cherry_mlx.compression.recurrent import unroll, untie
from cherry_mlx.decoding.generate import generate_tokens
from cherry_mlx.models import load_model, save_model
from cherry_mlx.models.families import GLOBAL, SLIDING
from cherry_mlx.models.loading import model_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

COMMON = dict(
    hidden_size=64,
    num_hidden_layers=4,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=256,
    max_position_embeddings=128,
)
TYPES = [SLIDING, GLOBAL, SLIDING, SLIDING]
FAMILIES = {
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(sliding_window=None, pad_token_id=0)),
    "gemma3_text": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        dict(head_dim=16, sliding_window=4, layer_types=TYPES, query_pre_attn_scalar=16),
    ),
    "gemma2": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        dict(
            head_dim=16,
            sliding_window=4,
            query_pre_attn_scalar=16,
            final_logit_softcapping=3.0,
            attn_logit_softcapping=2.0,
        ),
    ),
}
TOKENS = np.array([[1, 17, 250, 3, 99, 42, 7, 7, 200, 5, 0, 64, 33, 12, 150, 9, 80, 81]])


def _hf_logits(model, tokens=TOKENS):
    with torch.no_grad():
        return model(torch.from_numpy(tokens)).logits.numpy()


def _logits(model, tokens=TOKENS):
    return np.array(model(mx.array(tokens.astype(np.int32))))


def hf_model(family, **overrides):
    conf_cls, model_cls, extra = FAMILIES[family]
    config = getattr(transformers, conf_cls)(**{**COMMON, **extra, **overrides})
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config).float().eval()
    with torch.no_grad():  # spread the weights so that every one (norms too) matters
        for name, p in model.named_parameters():
            noise = torch.randn_like(p) * (0.3 if p.ndim == 1 else 0.15)
            p.copy_(noise)
            if "norm" in name and not family.startswith("gemma"):
                p.add_(1.0)
    return model


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_dir(request, tmp_path_factory):
    family = request.param
    model = hf_model(family)
    path = tmp_path_factory.mktemp(family)
    model.save_pretrained(path)
    return family, path, model


def test_logits_match_transformers(family_dir):
    family, path, ref = family_dir
    model, cfg = load_model(path)
    assert cfg["model_type"] == family
    assert np.abs(_logits(model) - _hf_logits(ref)).max() <= 1e-4


def test_cached_decoding_matches_full_forward(family_dir):
    """Token by token through the KV caches (sliding masks with an offset) = one full pass."""
    _, path, _ = family_dir
    model, _ = load_model(path)
    x = mx.array(TOKENS.astype(np.int32))
    cache = model.make_cache()
    steps = [model(x[:, :5], cache=cache)[:, -1]]
    for t in range(5, x.shape[1]):
        steps.append(model(x[:, t : t + 1], cache=cache)[:, -1])
    full = np.array(model(x))[0, 4:]
    assert np.abs(np.array(mx.stack(steps, 1))[0] - full).max() <= 1e-4


def test_merged_loads_in_transformers_and_plain_mlx_lm(family_dir, tmp_path):
    """4 -> 2 layers: the saved folder is an ordinary checkpoint of the family; Gemma's merged
    group [0, 1] (sliding + global) is global, [2, 3] stays sliding."""
    from mlx_lm.utils import load_model as mlx_lm_load_model

    family, path, _ = family_dir
    model, cfg = load_model(path)
    merged, mcfg = merge_model(model, cfg, [[0, 1], [2, 3]])
    out = save_model(merged, tmp_path / "merged", model_config(merged, mcfg))
    saved = json.loads((out / "config.json").read_text())
    if family == "gemma3_text":
        assert saved["layer_types"] == [GLOBAL, SLIDING]
    if family == "gemma2":  # sliding, global, sliding, global
        assert saved["layer_types"] == [GLOBAL, GLOBAL]
    ref = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    want = _logits(merged)
    assert np.abs(_hf_logits(ref) - want).max() <= 1e-4
    if family == "phi3":  # mlx-lm's Gemmas: a fixed layer pattern (3), no sliding window (2)
        theirs, _ = mlx_lm_load_model(out)
        assert np.abs(_logits(theirs) - want).max() <= 1e-4
    if family == "gemma3_text":  # off mlx-lm's pattern: our model file, never a silent mismatch
        assert saved["model_file"] == "cherry_model.py"
        theirs, _ = mlx_lm_load_model(out, trust_remote_code=True)
        assert np.abs(_logits(theirs) - want).max() <= 1e-4


def test_gemma3_plain_mlx_lm_on_its_own_pattern(tmp_path):
    """A Gemma 3 whose layers follow mlx-lm's 6-periodic pattern loads in plain mlx-lm with the
    same logits as ours (bfloat16-rounded embedding scale there: compared in bfloat16 terms)."""
    from mlx_lm.utils import load_model as mlx_lm_load_model

    types = [SLIDING] * 5 + [GLOBAL]
    ref = hf_model("gemma3_text", num_hidden_layers=6, layer_types=types, hidden_size=64)
    ref.save_pretrained(tmp_path)
    ours, _ = load_model(tmp_path)
    theirs, _ = mlx_lm_load_model(tmp_path)
    diff = np.abs(_logits(ours) - _logits(theirs)).max()
    assert diff <= 0.05 * np.abs(_logits(ours)).max()  # sqrt(64) = 8 is exact in bfloat16
    assert diff <= 1e-4


def test_looped_gemma_keeps_each_layer_type(tmp_path):
    """A looped core calls each unique layer with its own attention type on every loop: the
    looped model equals its untied twin, whose layer_types follow the schedule."""
    ref = hf_model("gemma3_text")
    ref.save_pretrained(tmp_path)
    model, cfg = load_model(tmp_path)
    looped, lcfg = unroll(model, cfg, loops=3, prelude=1, coda=1)  # P=[0] C=[1,2] Q=[3]
    twin, tcfg = untie(looped, lcfg)
    assert lcfg["layer_types"] == TYPES
    assert tcfg["layer_types"] == [TYPES[i] for i in looped.model.schedule]
    assert tcfg["layer_types"] == [SLIDING] + [GLOBAL, SLIDING] * 3 + [SLIDING]
    assert np.abs(_logits(looped) - _logits(twin)).max() <= 1e-4
    # the window matters: the same loop with all layers global differs
    glob, _ = unroll(
        load_model(tmp_path)[0], dict(cfg, layer_types=[GLOBAL] * 4), loops=3, prelude=1, coda=1
    )
    assert np.abs(_logits(looped) - _logits(glob)).max() > 1e-2


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_compress_4_to_2x2_generates(family, tmp_path):
    """Merge 4 -> 2 layers and loop the 2 twice (compress without healing): the folder generates
    through our loader and, with the same tokens, through plain mlx-lm in a process that cannot
    import cherry_mlx (the folder's cherry_model.py carries the model code)."""
    hf_model(family).save_pretrained(tmp_path / "src")
    model, cfg = load_model(tmp_path / "src")
    merged, mcfg = merge_model(model, cfg, [[0, 1], [2, 3]])
    looped, lcfg = unroll(merged, mcfg, loops=2, prelude=0, coda=0)
    out = save_model(looped, tmp_path / "c", model_config(looped, lcfg))
    model, cfg = load_model(out)
    assert cfg["recurrence"]["loops"] == 2 and cfg["num_hidden_layers"] == 2
    ours = list(generate_tokens(model, [1, 17, 250, 3], max_tokens=8))
    assert len(ours) == 8
    child = (
        "import sys, json\n"
        "class R:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith('cherry_mlx'): raise ImportError(name)\n"
        "sys.meta_path.insert(0, R())\n"
        "import mlx.core as mx\n"
        "from pathlib import Path\n"
        "from mlx_lm.utils import load_model\n"
        "from mlx_lm.generate import generate_step\n"
        "model, _ = load_model(Path(sys.argv[1]), trust_remote_code=True)\n"
        "toks = [int(t) for t, _ in generate_step(mx.array([1, 17, 250, 3]), model, "
        "max_tokens=8)]\n"
        "print(json.dumps(toks))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", child, str(out)], capture_output=True, text=True, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ours


GG_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<|end|>"]
GG_TOKENS += [f"<0x{b:02X}>" for b in range(256)] + list("▁abcdefgh")


def write_family_gguf(path, arch, seed=0):
    """A 2-layer gemma3 or phi3 GGUF as llama.cpp writes them (F32 tensors; gemma's norms stored
    as 1 + weight, phi3's fused qkv and gate/up)."""
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(seed)
    d, f, h, kv, hd = 64, 128, 4, 2, 16
    if arch.startswith("gemma"):
        hd = 256  # transformers' GGUF loader keeps Gemma's default query scale (256)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(256)
    w.add_embedding_length(d)
    w.add_block_count(2)
    w.add_feed_forward_length(f)
    w.add_head_count(h)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0 if arch == "phi3" else 1e6)
    if arch.startswith("gemma"):
        w.add_key_length(hd)
        w.add_value_length(hd)
        w.add_sliding_window(4)
    if arch == "gemma2":  # Gemma 2's values (transformers' GGUF loader assumes them)
        w.add_float32("gemma2.attn_logit_softcapping", 50.0)
        w.add_float32("gemma2.final_logit_softcapping", 30.0)
    else:
        w.add_rope_dimension_count(hd)
    w.add_tokenizer_model("llama")
    w.add_token_list(GG_TOKENS)
    w.add_token_scores([-float(i) for i in range(len(GG_TOKENS))])
    w.add_token_types([3] * 7 + [6] * 256 + [1] * (len(GG_TOKENS) - 263))
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)

    def t(name, *shape, norm=False):
        x = (rng.standard_normal(shape) * (0.3 if norm else 0.15)).astype(np.float32)
        w.add_tensor(name, x + (1.0 if norm else 0.0))  # gemma: stored 1 + w; phi3: w near 1

    vocab = len(GG_TOKENS)
    t("token_embd.weight", vocab, d)
    t("output_norm.weight", d, norm=True)
    if arch == "phi3":
        t("output.weight", vocab, d)
    for i in range(2):
        p = f"blk.{i}."
        t(p + "attn_norm.weight", d, norm=True)
        t(p + "attn_output.weight", d, h * hd)
        t(p + "ffn_down.weight", d, f)
        t(p + "ffn_norm.weight", d, norm=True)
        if arch == "phi3":
            t(p + "attn_qkv.weight", (h + 2 * kv) * hd, d)
            t(p + "ffn_up.weight", 2 * f, d)
        else:
            t(p + "attn_q.weight", h * hd, d)
            t(p + "attn_k.weight", kv * hd, d)
            t(p + "attn_v.weight", kv * hd, d)
            if arch == "gemma3":
                t(p + "attn_q_norm.weight", hd, norm=True)
                t(p + "attn_k_norm.weight", hd, norm=True)
            t(p + "post_attention_norm.weight", d, norm=True)
            t(p + "post_ffw_norm.weight", d, norm=True)
            t(p + "ffn_gate.weight", f, d)
            t(p + "ffn_up.weight", f, d)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("arch", ["gemma2", "gemma3", "phi3"])
def test_gguf_family_matches_transformers_gguf_loader(arch, tmp_path):
    from cherry_mlx.models.gguf import import_gguf

    write_family_gguf(tmp_path / "m.gguf", arch)
    out = import_gguf(tmp_path / "m.gguf", tmp_path / "hf")
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="m.gguf", dtype=torch.float32
    ).eval()
    ids = np.array([[2, 17, 250, 3, 99, 42, 7, 7, 260, 5, 0, 264, 33]])
    model, cfg = load_model(out)
    assert cfg["model_type"] == {"gemma3": "gemma3_text"}.get(arch, arch)
    assert np.abs(_logits(model, ids) - _hf_logits(ref, ids)).max() <= 1e-4
    from cherry_mlx.models import load_tokenizer

    tok = load_tokenizer(out)
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    gemma = arch.startswith("gemma")
    assert chat.startswith("<bos><start_of_turn>user\n" if gemma else "<|user|>\n")
    end = 5 if gemma else 6  # <end_of_turn> / <|end|> end a reply
    assert cfg["eos_token_id"] == [1, end] and end in tok.eos_token_ids
