"""Mistral and Phi-3 with a ``sliding_window``: every layer attends to the last W tokens only, as
in transformers. Tiny random checkpoints with W = 4 on 18 tokens, so the window matters."""

import json

import mlx.core as mx
import numpy as np
import pytest

from cherry_mlx.compression.merge import merge_model
from cherry_mlx.models import load_model, save_model
from cherry_mlx.models.loading import model_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

COMMON = dict(
    hidden_size=64,
    num_hidden_layers=2,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=256,
    max_position_embeddings=128,
    tie_word_embeddings=False,
    sliding_window=4,
)
CLASSES = {
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "phi3": ("Phi3Config", "Phi3ForCausalLM"),
}
TOKENS = np.array([[1, 17, 250, 3, 99, 42, 7, 7, 200, 5, 0, 64, 33, 12, 150, 9, 80, 81]])


@pytest.fixture(scope="module", params=sorted(CLASSES))
def windowed(request, tmp_path_factory):
    conf_cls, model_cls = CLASSES[request.param]
    config = getattr(transformers, conf_cls)(**COMMON, pad_token_id=0)
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config).float().eval()
    with torch.no_grad():  # spread the weights so that every position's keys matter
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim == 1 else 0.15) + ("norm" in name))
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    with torch.no_grad():
        want = model(torch.from_numpy(TOKENS)).logits.numpy()
        config.sliding_window = None  # the same weights without the window: must differ
        unwindowed = getattr(transformers, model_cls)(config).float().eval()
        unwindowed.load_state_dict(model.state_dict())
        full = unwindowed(torch.from_numpy(TOKENS)).logits.numpy()
    return path, want, full


def _logits(model):
    return np.array(model(mx.array(TOKENS.astype(np.int32))))


def test_logits_match_transformers_beyond_the_window(windowed):
    path, want, full = windowed
    model, _ = load_model(path)
    got = _logits(model)
    assert np.abs(got - want).max() <= 1e-4
    assert np.abs(got[0, 4:] - full[0, 4:]).max() > 1e-2  # the window changed something
    assert np.abs(got[0, :4] - full[0, :4]).max() <= 1e-4  # and nothing inside it


def test_cached_decoding_keeps_the_window(windowed):
    path, want, _ = windowed
    model, _ = load_model(path)
    x = mx.array(TOKENS.astype(np.int32))
    cache = model.make_cache()
    steps = [model(x[:, :3], cache=cache)[:, -1]]
    for t in range(3, x.shape[1]):
        steps.append(model(x[:, t : t + 1], cache=cache)[:, -1])
    assert np.abs(np.array(mx.stack(steps, 1))[0] - want[0, 2:]).max() <= 1e-4


def test_merged_folder_keeps_the_window_and_loads_in_plain_mlx_lm(windowed, tmp_path):
    """The saved config carries sliding_window but no all-sliding layer_types (plain mlx-lm's
    llama needs a global layer in any list it reads); transformers reads it with the window."""
    from mlx_lm.utils import load_model as mlx_lm_load_model

    path, _, _ = windowed
    model, cfg = load_model(path)
    merged, mcfg = merge_model(model, cfg, [[0, 1]])
    out = save_model(merged, tmp_path / "m", model_config(merged, mcfg))
    saved = json.loads((out / "config.json").read_text())
    assert saved["sliding_window"] == 4 and "layer_types" not in saved
    ref = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        want = ref(torch.from_numpy(TOKENS)).logits.numpy()
    assert np.abs(_logits(merged) - want).max() <= 1e-4
    theirs, _ = mlx_lm_load_model(out)  # loads (without the window: mlx-lm's own limit)
    assert np.abs(_logits(theirs)[0, :4] - want[0, :4]).max() <= 1e-4
