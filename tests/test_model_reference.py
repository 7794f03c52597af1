"""Our backbone against independent implementations on the same random weights (hub layout)."""

import json

import mlx.core as mx
import numpy as np
import pytest
from safetensors.numpy import save_file

from cherry_mlx.models import load_model

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 3,
    "intermediate_size": 160,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "rms_norm_eps": 1e-5,
    "vocab_size": 300,
    "max_position_embeddings": 128,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
    "attention_bias": False,
    "mlp_bias": False,
    "torch_dtype": "float32",
}


def _random_hub_dir(path, config, seed=0):
    """Write config.json + model.safetensors the way the HF hub lays out a Llama checkpoint."""
    rng = np.random.default_rng(seed)
    d, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    hd, nh, nkv = config["head_dim"], config["num_attention_heads"], config["num_key_value_heads"]

    def w(*shape):
        return (rng.standard_normal(shape) * 0.08).astype(np.float32)

    weights = {"model.embed_tokens.weight": w(v, d), "model.norm.weight": 1 + w(d)}
    if not config["tie_word_embeddings"]:
        weights["lm_head.weight"] = w(v, d)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        weights |= {
            p + "self_attn.q_proj.weight": w(nh * hd, d),
            p + "self_attn.k_proj.weight": w(nkv * hd, d),
            p + "self_attn.v_proj.weight": w(nkv * hd, d),
            p + "self_attn.o_proj.weight": w(d, nh * hd),
            p + "mlp.gate_proj.weight": w(f, d),
            p + "mlp.up_proj.weight": w(f, d),
            p + "mlp.down_proj.weight": w(d, f),
            p + "input_layernorm.weight": 1 + w(d),
            p + "post_attention_layernorm.weight": 1 + w(d),
        }
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory):
    return _random_hub_dir(tmp_path_factory.mktemp("hub"), CONFIG)


TOKENS = np.array([[1, 17, 250, 3, 99, 42, 7, 7, 288, 5, 0, 64]], dtype=np.int64)


def test_logits_match_transformers(hub_dir):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ref = transformers.LlamaForCausalLM.from_pretrained(hub_dir, torch_dtype=torch.float32)
    ref.eval()
    with torch.no_grad():
        expected = ref(torch.from_numpy(TOKENS)).logits.numpy()

    model, _ = load_model(hub_dir)
    ours = np.array(model(mx.array(TOKENS.astype(np.int32))))
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() <= 1e-4


def test_logits_match_mlx_lm(hub_dir):
    from mlx_lm.utils import load_model as mlx_lm_load_model

    theirs, _ = mlx_lm_load_model(hub_dir)
    ours, _ = load_model(hub_dir)
    x = mx.array(TOKENS.astype(np.int32))
    assert np.abs(np.array(ours(x)) - np.array(theirs(x))).max() <= 1e-5


def test_cached_decoding_matches_full_forward(hub_dir):
    """Prefill + one-token steps through the KV cache give the full pass's logits."""
    model, _ = load_model(hub_dir)
    x = mx.array(TOKENS.astype(np.int32))
    full = np.array(model(x))
    cache = model.make_cache()
    steps = [np.array(model(x[:, :5], cache=cache))]
    for t in range(5, x.shape[1]):
        steps.append(np.array(model(x[:, t : t + 1], cache=cache)))
    assert np.abs(np.concatenate(steps, axis=1) - full).max() <= 1e-4


def test_hidden_then_logits_equals_call(hub_dir):
    model, _ = load_model(hub_dir)
    x = mx.array(TOKENS.astype(np.int32))
    h = model.hidden(x)
    assert h.shape == (1, TOKENS.shape[1], CONFIG["hidden_size"])
    assert mx.allclose(model.logits(h[:, 3:5]), model(x)[:, 3:5], atol=1e-6)


def test_tied_embeddings_round_trip(tmp_path):
    """A tied checkpoint saved by us reloads with identical logits and no lm_head weight."""
    from cherry_mlx.models import build_model, save_model
    from cherry_mlx.models.loading import model_config

    cfg = dict(CONFIG, tie_word_embeddings=True)
    model = build_model(cfg)
    mx.eval(model.parameters())
    out = save_model(model, tmp_path / "m", model_config(model, cfg))
    back, back_cfg = load_model(out)
    x = mx.array(TOKENS.astype(np.int32))
    assert mx.array_equal(model(x), back(x))
    assert back_cfg["num_hidden_layers"] == 3 and "layer_types" not in json.loads(
        (out / "config.json").read_text()
    )
    assert "lm_head.weight" not in mx.load(str(out / "model.safetensors"))


def test_missing_weights_error_names_the_fix(tmp_path):
    from cherry_mlx.models.loading import ModelNotFound

    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    with pytest.raises(ModelNotFound, match="no model.*safetensors.*train"):
        load_model(tmp_path)


def test_unknown_preset_lists_known_ones():
    from cherry_mlx.models.loading import ModelNotFound, resolve

    with pytest.raises(ModelNotFound, match="cherry-tiny"):
        resolve("no-such-preset")
