"""The memory plan's arithmetic against hand-computed counts, checkpointing's gradients against
plain backprop, and the warning a run that would not fit gets before it starts."""

import json

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten

from cherry_mlx.models.loading import build_model
from cherry_mlx.models.memory import (
    LOGIT_COPIES,
    config_shape,
    optimizer_state_bytes,
    plan_serving,
    plan_training,
)
from cherry_mlx.training.config import TrainConfig
from cherry_mlx.training.setup import _enable_checkpointing, memory_warning

D, L, F, H, KV, HD, V = 64, 2, 128, 4, 2, 16, 256


def tiny(**kw):
    cfg = {
        "model_type": "llama", "hidden_size": D, "num_hidden_layers": L, "intermediate_size": F,
        "num_attention_heads": H, "num_key_value_heads": KV, "head_dim": HD, "vocab_size": V,
        "tie_word_embeddings": True, "rms_norm_eps": 1e-5,
    }  # fmt: skip
    cfg.update(kw)
    return cfg


# by hand: q and o are D x (H*HD), k and v D x (KV*HD) (GQA), three D x F FFN matrices, 2 norms
BLOCK = D * H * HD * 2 + D * KV * HD * 2 + 3 * D * F + 2 * D
TIED = V * D + L * BLOCK + D  # embedding (= LM head) + blocks + final norm


def test_gqa_tied_parameter_count_and_bytes():
    s = config_shape(tiny())
    assert s.params == TIED
    p = plan_training(s, batch=1, seq=8, optimizer="adamw", dtype="float32", device="cpu")
    assert p.rows["weights"] == 4 * TIED
    assert p.rows["gradients"] == 4 * TIED
    assert p.rows["optimizer state"] == 8 * TIED  # two float32 moments
    assert p.rows["update (new weights + state)"] == 12 * TIED
    assert p.peak >= 4 * TIED * 7  # the compiled update's floor: W + G + O + new (W + O)


def test_untied_adds_the_lm_head_and_bf16_halves_weights_not_state():
    s = config_shape(tiny(tie_word_embeddings=False))
    assert s.params == TIED + V * D
    p = plan_training(s, 1, 8, optimizer="adamw", dtype="bfloat16", device="gpu")
    assert p.rows["weights"] == 2 * s.params and p.rows["gradients"] == 2 * s.params
    assert p.rows["optimizer state"] == 8 * s.params  # float32 moments under bf16 weights


def test_mtp_heads_add_one_block_each():
    head = 2 * D + 2 * D * D + BLOCK + D  # two input norms, 2D -> D projection, block, norm
    s = config_shape(tiny(), mtp=2)
    assert s.params == TIED + 2 * head and s.mtp_heads == 2
    # each head's logits are kept for its loss: (1 + K) float32 vocabulary rows per token
    no = plan_training(config_shape(tiny()), 1, 8, dtype="float32", device="cpu")
    yes = plan_training(s, 1, 8, dtype="float32", device="cpu")
    extra_logits = 2 * LOGIT_COPIES * 8 * V * 4
    assert yes.rows["activations"] - no.rows["activations"] > extra_logits


def test_moee_experts_and_gate():
    expert = tiny(tie_word_embeddings=True)
    cfg = tiny(moee={"granularity": "model", "num_experts": 2, "top_k": 1,
                     "shared_embeddings": True, "experts": [expert, expert]})  # fmt: skip
    s = config_shape(cfg)
    # two trunks (blocks + final norm), one shared embedding, the gate D x N
    assert s.params == 2 * (L * BLOCK + D) + V * D + D * 2
    assert s.calls == 2 * L  # every expert runs at every position


def test_looped_core_counts_calls_not_weights():
    looped = tiny(num_hidden_layers=3, recurrence={"prelude": 1, "core": 1, "coda": 1, "loops": 4})
    s = config_shape(looped)
    assert s.unique_layers == 3 and s.calls == 6
    assert s.params == V * D + 3 * BLOCK + D
    kv = plan_serving(s, batch=1, context=100, fmt="fp32", device="cpu").rows["KV cache"]
    assert kv == 2 * 6 * KV * HD * 100 * 4  # keys and values of every block call


def test_adafactor_state_is_rows_plus_columns():
    s = config_shape(tiny())
    by_hand = 0
    for shp in s.param_shapes:
        by_hand += shp[0] + shp[1] if len(shp) == 2 else shp[0]
    assert optimizer_state_bytes(s, "adafactor") == 4 * by_hand
    assert optimizer_state_bytes(s, "sgd") == 0


def test_checkpointing_shrinks_the_plan_with_depth():
    deep = config_shape(tiny(num_hidden_layers=16))
    plain = plan_training(deep, 4, 128, False, "sgd", "float32", "cpu").rows["activations"]
    ckpt = plan_training(deep, 4, 128, True, "sgd", "float32", "cpu").rows["activations"]
    assert ckpt < plain / 2


def _grads(model, x, y):
    def loss(m):
        return nn.losses.cross_entropy(m(x), y, reduction="mean")

    return dict(tree_flatten(nn.value_and_grad(model, loss)(model)[1]))


@pytest.mark.parametrize(
    "cfg",
    [
        tiny(),
        tiny(num_hidden_layers=3, recurrence={"prelude": 1, "core": 1, "coda": 1, "loops": 3}),
        tiny(
            moee={
                "granularity": "model",
                "num_experts": 2,
                "top_k": 1,
                "shared_embeddings": True,
                "experts": [tiny(), tiny()],
            }
        ),  # fmt: skip
        tiny(moee={"granularity": "layer", "num_experts": 2, "top_k": 1}),
    ],
    ids=["llama", "looped", "moee", "layer-moee"],
)
def test_checkpointing_gives_the_same_gradients(cfg):
    mx.random.seed(0)
    model = build_model(cfg)
    mx.eval(model.parameters())
    x = mx.random.randint(0, V, (2, 16))
    y = mx.random.randint(0, V, (2, 16))
    plain = _grads(model, x, y)
    _enable_checkpointing(model)
    ckpt = _grads(model, x, y)
    assert plain.keys() == ckpt.keys()
    worst = max(mx.abs(plain[k] - ckpt[k]).max().item() for k in plain)
    assert worst <= 1e-6, worst  # the same ops recomputed: equal up to float rounding


def test_a_run_that_would_not_fit_is_warned_about():
    model = build_model(tiny())
    cfg = TrainConfig(batch_size=8, seq_len=256)
    msg = memory_warning(cfg, model, available=1e6)  # 1 MB available
    assert msg is not None and "--grad-checkpoint" in msg and "--optimizer adafactor" in msg
    assert memory_warning(cfg, model, available=1e12) is None


def test_every_step_records_peak_memory_and_the_run_prints_it(tmp_path, tiny_config, capsys):
    from _train_helpers import base_cfg, run

    res = run(base_cfg(tmp_path, steps=2, eval_every=0, optimizer="adafactor"), tiny_config)
    rows = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:  # MLX's allocation holds at least the weights; resident memory exceeds it
        assert 0 < r["peak_mib"] < r["rss_peak_mib"] and r["step_s"] > 0
    assert "peak memory:" in capsys.readouterr().err


def test_plain_sgd_keeps_no_state_and_steps_by_hand():
    from cherry_mlx.training.step import PlainSGD

    opt = PlainSGD(learning_rate=0.1, weight_decay=0.01)
    w, g = mx.array([1.0, -2.0]), mx.array([0.5, 0.25])
    new = opt.apply_gradients({"w": g}, {"w": w})["w"]
    expect = [1.0 - 0.1 * (0.5 + 0.01 * 1.0), -2.0 - 0.1 * (0.25 + 0.01 * -2.0)]
    assert mx.allclose(new, mx.array(expect)).item()
    assert opt.state["w"] == {}  # no velocity buffer per weight


def test_info_prints_the_plan_and_what_fits_without_allocating(tmp_path, monkeypatch):
    from cherry_mlx.models.info import show_info
    from cherry_mlx.models.settings import InfoConfig

    monkeypatch.chdir(tmp_path)
    before = mx.get_active_memory()
    out = []
    cfg = InfoConfig(model="cherry-1.8b", batch_size=1, seq_len=512, grad_checkpoint=True,
                     optimizer="adafactor", device="cpu")  # fmt: skip
    report = show_info(cfg, log=out.append)
    text = out[0]
    assert "predicted training peak" in text and "predicted serving peak" in text
    assert "what fits" in text and "Llama-3.1-70B" in text
    plan = report["memory"]["train"]
    assert plan["rows_bytes"]["weights"] == 4 * report["total"]  # fp32 on the CPU
    assert mx.get_active_memory() - before < 2**20  # 1.4B (and 70B) parameters never allocated
    assert list(tmp_path.iterdir()) == []  # nothing written
