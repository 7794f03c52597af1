"""Llama (Llama 3 RoPE scaling), Mistral, Qwen2 and Qwen3 checkpoints written by transformers:
our forward pass, merge, looped schedule and self-speculative decoding on each, against
transformers, mlx-lm and numpy."""

import json

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from cherry_mlx.compression.merge import merge_model
from cherry_mlx.compression.recurrent import unroll, untie
from cherry_mlx.decoding.generate import GenerationStats, generate_tokens
from cherry_mlx.decoding.speculative import speculative_generate_tokens
from cherry_mlx.models import build_model, load_model, save_model
from cherry_mlx.models.loading import model_classes, model_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from safetensors.numpy import load_file  # noqa: E402

COMMON = dict(
    hidden_size=64,
    num_hidden_layers=2,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=256,
    max_position_embeddings=128,
    tie_word_embeddings=False,
)
FAMILIES = {
    "llama": dict(
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    ),
    "mistral": dict(sliding_window=None),
    "qwen2": dict(rope_theta=1000.0),
    "qwen3": dict(head_dim=24, tie_word_embeddings=True),
}
CLASSES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
}
TOKENS = np.array([[1, 17, 250, 3, 99, 42, 7, 7, 200, 5, 0, 64, 33, 12, 150, 9, 80, 81]])


def _hf_logits(model, tokens=TOKENS):
    with torch.no_grad():
        return model(torch.from_numpy(tokens)).logits.numpy()


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_dir(request, tmp_path_factory):
    """A random checkpoint saved by transformers' own ``save_pretrained`` (hub layout)."""
    family = request.param
    conf_cls, model_cls = (getattr(transformers, n) for n in CLASSES[family])
    config = conf_cls(**{**COMMON, **FAMILIES[family]})
    torch.manual_seed(0)
    model = model_cls(config).float().eval()
    with torch.no_grad():  # spread the weights so that every one (biases, norms too) matters
        for name, p in model.named_parameters():
            noise = torch.randn_like(p) * (0.3 if p.ndim == 1 else 0.15)
            p.copy_(1 + noise if "norm" in name else noise)
    path = tmp_path_factory.mktemp(family)
    model.save_pretrained(path)
    return family, path, model


def _ours(path):
    model, cfg = load_model(path)
    mx.eval(model.parameters())
    return model, cfg


def _logits(model, tokens=TOKENS):
    return np.array(model(mx.array(tokens.astype(np.int32))))


def test_logits_match_transformers(family_dir):
    family, path, ref = family_dir
    model, cfg = _ours(path)
    assert cfg["model_type"] == family
    expected = _hf_logits(ref)
    assert np.abs(_logits(model) - expected).max() <= 1e-4


def test_cached_decoding_matches_full_forward(family_dir):
    _, path, _ = family_dir
    model, _ = _ours(path)
    x = mx.array(TOKENS.astype(np.int32))
    cache = model.make_cache()
    steps = [np.array(model(x[:, :6], cache=cache))]
    steps += [np.array(model(x[:, t : t + 1], cache=cache)) for t in range(6, x.shape[1])]
    assert np.abs(np.concatenate(steps, axis=1) - _logits(model)).max() <= 1e-4


def test_merged_is_numpy_average_and_loads_in_transformers_and_mlx_lm(family_dir, tmp_path):
    from mlx_lm.utils import load_model as mlx_lm_load_model

    _, path, _ = family_dir
    model, cfg = _ours(path)
    merged, mcfg = merge_model(model, cfg, [[0, 1]])
    source = load_file(str(path / "model.safetensors"))
    flat = dict(tree_flatten(merged.parameters()))
    layer_keys = [k[len("model.layers.0.") :] for k in flat if k.startswith("model.layers.0.")]
    assert len(layer_keys) >= 9  # q, k, v, o, gate, up, down, two norms (+ biases / q-k norms)
    for key in layer_keys:
        expected = (source[f"model.layers.0.{key}"] + source[f"model.layers.1.{key}"]) / 2
        np.testing.assert_allclose(np.array(flat[f"model.layers.0.{key}"]), expected, atol=1e-7)

    out = save_model(merged, tmp_path / "merged", model_config(merged, mcfg))
    ref = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    theirs, _ = mlx_lm_load_model(out)
    want = _logits(merged)
    assert np.abs(_hf_logits(ref) - want).max() <= 1e-4
    assert np.abs(_logits(theirs) - want).max() <= 1e-4


def test_looped_schedule(family_dir):
    """loops=1 is the merged model; loops=3 equals its explicitly stacked, untied twin."""
    _, path, _ = family_dir
    model, cfg = _ours(path)
    merged, mcfg = merge_model(model, cfg, [[0], [1]])
    once, ocfg = unroll(merged, mcfg, loops=1, prelude=1, coda=0)
    assert "recurrence" not in ocfg
    assert np.array_equal(_logits(once), _logits(merged))
    looped, lcfg = unroll(merged, mcfg, loops=3, prelude=1, coda=0)
    assert looped.model.schedule == (0, 1, 1, 1)
    twin, _ = untie(looped, lcfg)
    assert np.abs(_logits(looped) - _logits(twin)).max() <= 1e-4
    assert np.abs(_logits(looped) - _logits(merged)).max() > 1e-3  # the loops do something


def test_speculative_equals_greedy(family_dir):
    _, path, _ = family_dir
    model, cfg = _ours(path)
    mcfg = dict(cfg, mtp={"num_heads": 2})
    spec = build_model(mcfg)
    mx.eval(spec.parameters())
    spec.load_weights(tree_flatten(model.parameters()), strict=False)
    d = spec.args.hidden_size
    for head in spec.mtp.heads:  # heads that guess "the trunk's argmax for the next token"
        head.proj.weight = mx.concatenate([mx.zeros((d, d)), mx.eye(d)], axis=1)
        head.block.self_attn.o_proj.weight = mx.zeros_like(head.block.self_attn.o_proj.weight)
        head.block.mlp.down_proj.weight = mx.zeros_like(head.block.mlp.down_proj.weight)
    mx.eval(spec.parameters())
    prompt = [int(t) for t in TOKENS[0, :7]]
    plain = list(generate_tokens(spec, prompt, max_tokens=16))
    stats = GenerationStats()
    fast = list(speculative_generate_tokens(spec, prompt, max_tokens=16, stats=stats))
    assert fast == plain and len(plain) == 16
    assert stats.rounds > 0 and stats.drafted > 0


def test_unsupported_family_lists_the_supported_ones():
    with pytest.raises(ValueError, match="gpt2.*llama, mistral, qwen2, qwen3, phi3, gemma3_text"):
        model_classes({"model_type": "gpt2"})


def test_rope_parameters_of_transformers_5_are_read(family_dir):
    family, path, _ = family_dir
    saved = json.loads((path / "config.json").read_text())
    _, cfg = _ours(path)
    model = build_model(cfg)
    theta = (saved.get("rope_parameters") or {}).get("rope_theta", saved.get("rope_theta"))
    assert model.args.rope_theta == pytest.approx(theta)
    if family == "llama":
        assert model.args.rope_scaling["rope_type"] == "llama3"
