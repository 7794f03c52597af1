"""Every command on Phi-3, Gemma 2 and Gemma 3 (text): tiny random checkpoints written by
transformers (vocab 4,096 with cherry-tiny's tokenizer beside them, so the bundled data works),
run through the CLI. Each result is checked against transformers on the same weights (generate,
the folders train/compress write) or against the source model (quantize's held-out loss, the
NVFP4 fold leaving the function unchanged)."""

import json
import math
import re
import shutil

import mlx.core as mx
import numpy as np
import pytest
from typer.testing import CliRunner

from cherry_mlx.models import load_model, load_tokenizer
from cherry_mlx.models.families import GLOBAL, SLIDING
from cherry_mlx.models.presets import WEIGHTS_DIR
from cherry_mlx.quant.fold import fold_tensor_scales

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

COMMON = dict(
    hidden_size=64,
    num_hidden_layers=4,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=4096,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=3,
)
FAMILIES = {
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(sliding_window=None)),
    "gemma2": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        dict(head_dim=16, sliding_window=8, query_pre_attn_scalar=16),
    ),
    "gemma3_text": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        dict(
            head_dim=16,
            sliding_window=8,
            query_pre_attn_scalar=16,
            layer_types=[SLIDING, GLOBAL, SLIDING, SLIDING],
        ),
    ),
}
TOKENS = np.array([[1, 17, 250, 3, 99, 42, 7, 7, 200, 5, 1000, 64, 33, 12, 3150, 9, 80, 81]])


def _cli(*args):
    from cherry_mlx_cli.main import app

    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


def _hf(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _same_as_transformers(path):
    """The folder loads in transformers as its family, with our logits (≤ 1e-4)."""
    model, _ = load_model(path)
    with torch.no_grad():
        want = _hf(path)(torch.from_numpy(TOKENS)).logits.numpy()
    got = np.array(model(mx.array(TOKENS.astype(np.int32))))
    assert np.abs(got - want).max() <= 1e-4


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_dir(request, tmp_path_factory):
    family = request.param
    conf_cls, model_cls, extra = FAMILIES[family]
    torch.manual_seed(0)
    config = getattr(transformers, conf_cls)(**COMMON, **extra)
    model = getattr(transformers, model_cls)(config).float().eval()
    with torch.no_grad():  # random norms too (Gemma's start at 0 = gain 1), so they matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    path = tmp_path_factory.mktemp(family) / "src"
    model.save_pretrained(path)
    for f in WEIGHTS_DIR.joinpath("cherry-tiny").iterdir():
        if f.name != "config.json":
            shutil.copy(f, path / f.name)
    return family, path


def test_generate_equals_transformers_greedy(family_dir):
    _, path = family_dir
    prompt = "The capital of Korea is"
    ids = load_tokenizer(path).encode(prompt)
    with torch.no_grad():
        out = _hf(path).generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)
    want = load_tokenizer(path).decode([t for t in out[0, len(ids) :].tolist() if t != 2])
    text = _cli("generate", path, "-p", prompt, "-m", 8, "--raw", "--no-speculative")
    assert want.strip() and want.strip() in text


def test_train_changes_the_loss_and_keeps_the_family(family_dir, tmp_path):
    _, path = family_dir
    _cli("train", "--model", path, "--steps", 4, "--batch-size", 2, "--seq-len", 32,
         "--runs-dir", tmp_path, "--name", "r", "--eval-every", 4, "--save-every", 4,
         "--report-every", 1, "--no-demo", "--warmup", 1)  # fmt: skip
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").open()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) >= 4 and all(math.isfinite(v) for v in losses)
    assert len(set(losses)) > 1
    _same_as_transformers(tmp_path / "r" / "best")


@pytest.mark.parametrize(
    "how",
    [
        ("--to", "2L"),
        ("--to", "2L", "--method", "prune-bi"),
        ("--to", "2L", "--loops", "2", "--layout", "0,2,0"),
    ],
    ids=["merge", "prune", "loop"],
)
def test_compress_heals_and_writes_a_loadable_model(family_dir, tmp_path, how):
    _, path = family_dir
    out = tmp_path / "c"
    # the paper recipe (SGT healing): distillation healing has its own slow cases below
    text = _cli("compress", path, *how, "--recipe", "paper", "--pre-unroll-steps", 0,
                "--heal-steps", 2,
                "--batch-size", 2, "--seq-len", 32, "--eval-batches", 1, "-o", out)  # fmt: skip
    losses = [float(v) for v in re.findall(r"loss (\d+\.\d+)", text)]
    assert losses and all(math.isfinite(v) for v in losses)
    model_dir = out / "model" if (out / "model").is_dir() else out
    cfg = json.loads((model_dir / "config.json").read_text())
    if "--loops" in how:  # a looped core: our model file; it still generates
        assert cfg.get("model_file") == "cherry_model.py"
        assert _cli("generate", model_dir, "-p", "hi", "-m", 3, "--raw", "--no-speculative")
    else:  # an ordinary 2-layer checkpoint of the family
        assert cfg["num_hidden_layers"] == 2
        _same_as_transformers(model_dir)


@pytest.mark.parametrize("mode", ["nvfp4", "affine4"])
def test_quantize_keeps_the_held_out_loss(family_dir, tmp_path, mode):
    _, path = family_dir
    out = tmp_path / "q"
    text = _cli("quantize", path, "--mode", mode, "--eval-batches", 1, "-o", out)
    before, after = map(float, re.search(r"held-out loss (\S+) -> (\S+)", text).groups())
    assert abs(after - before) < 0.05  # 4-bit weights of a random model: a small change
    assert _cli("generate", out, "-p", "hi", "-m", 3, "--raw", "--no-speculative")


def test_nvfp4_fold_leaves_the_function_unchanged(family_dir):
    """The tensor-scale fold alone (no rounding) must not change the logits. Gemma's norms
    scale by 1 + weight and its post-norms' eps is not negligible, so its blocks stay unfolded
    (dividing the gains as plain RMSNorm weights made q/k/v 2048x too large on gemma-3-270m);
    Phi-3's fused matrices are not folded either."""
    _, path = family_dir
    model, cfg = load_model(path)
    x = mx.array(TOKENS.astype(np.int32))
    want = np.array(model(x))
    folded = fold_tensor_scales(model, config=dict(cfg))
    assert not any(k.startswith("model.layers.") for k in folded)
    assert np.abs(np.array(model(x)) - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


def test_hidden_states_for_pruning_and_teachers_follow_the_family(family_dir):
    """The per-block states that pruning, teacher caches and refinement read (Gemma: scaled
    embedding, sliding windows, array masks) end where the model's own forward pass ends."""
    from cherry_mlx.compression.redundancy import block_states
    from cherry_mlx.selection.refine import layer_states
    from cherry_mlx.training.teacher import teacher_forward

    _, path = family_dir
    model, _ = load_model(path)
    x = mx.array(TOKENS.astype(np.int32))
    want = np.array(model(x))
    depth = len(model.model.schedule)
    for last in (block_states(model, x)[-1], layer_states(model, x, depth)):
        assert np.abs(np.array(model.logits(model.model.norm(last))) - want).max() <= 1e-4
    top_idx, top_val, lse, _ = teacher_forward(model, x, k=1)
    assert (np.array(top_idx)[..., 0] == want.argmax(-1)).all()


@pytest.mark.slow  # builds a teacher cache of the bundled data: ~25 s per family
def test_compress_with_distillation_healing(family_dir, tmp_path):
    """Block-local healing and distillation read the teacher's per-block states (Gemma:
    scaled embedding, sliding and array masks): the healed folder is the family's."""
    _, path = family_dir
    out = tmp_path / "d"
    text = _cli("compress", path, "--to", "2L", "--heal-with", "distill", "--local-steps", 2,
                "--heal-steps", 2, "--batch-size", 2, "--seq-len", 32, "--eval-batches", 1,
                "-o", out)  # fmt: skip
    errors = [float(v) for v in re.findall(r"relative error (\d+\.\d+)", text)]
    assert errors and all(0 < e < 10 for e in errors)
    _same_as_transformers(out / "model")
