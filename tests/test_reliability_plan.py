"""``plan`` on malformed configs and impossible options: a one-line error naming the file and the
field, never an exception from the arithmetic or a table of impossible numbers.

The reference for "impossible" is the config's own meaning: a token cannot use more experts than
exist, a parameter count cannot be negative, heads must divide the hidden size to build."""

import json

import pytest

from cherry_mlx.compression.config import PlanConfig
from cherry_mlx.compression.plan import plan, plan_command

BASE = dict(hidden_size=128, num_hidden_layers=4, vocab_size=1000, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=256)  # fmt: skip
MOE = dict(BASE, num_local_experts=8, num_experts_per_tok=2, moe_intermediate_size=64)


def _plan_file(tmp_path, text, to="2L"):
    path = tmp_path / "config.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError) as err:
        plan_command(PlanConfig(config=str(path), to=to), log=lambda *_: None)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    return msg


@pytest.mark.parametrize(
    "config, field",
    [
        ([1, 2, 3], "array"),
        (None, "null"),
        (dict(BASE, hidden_size="big"), "hidden_size is 'big'"),
        (dict(BASE, num_hidden_layers=-4), "num_hidden_layers is -4"),
        (dict(BASE, num_attention_heads=0), "num_attention_heads is 0"),
        (dict(BASE, hidden_size=130), "not divisible by num_attention_heads"),
        ({k: v for k, v in MOE.items() if "intermediate" not in k}, "intermediate_size"),
        (dict(MOE, mlp_only_layers=3), "mlp_only_layers is 3"),
        (dict(BASE, kv_lora_rank=64), "qk_nope_head_dim"),
        (dict(MOE, num_local_experts="eight"), "num_local_experts is 'eight'"),
        (dict(BASE, hidden_size=True), "hidden_size is True"),
        (dict(BASE, q_lora_rank="5"), "q_lora_rank is '5'"),
        (dict(BASE, num_key_value_heads=3), "not a multiple of num_key_value_heads"),
        (dict(BASE, recurrence={"prelude": 1, "core": 9, "coda": 1, "loops": 2}), "recurrence"),
        (dict(text_config=[1]), "text_config"),
    ],
)
def test_malformed_plan_config_is_one_line_naming_file_and_field(tmp_path, config, field):
    assert field in _plan_file(tmp_path, json.dumps(config))


def test_infinite_plan_config_field_is_refused_not_overflowing(tmp_path):
    text = json.dumps(BASE).replace('"hidden_size": 128', '"hidden_size": Infinity')
    assert "hidden_size is inf" in _plan_file(tmp_path, text)


def test_binary_plan_config_names_the_file(tmp_path):
    assert "not valid JSON" in _plan_file(tmp_path, b"\x80\x81\xffgarbage")


def test_top_k_above_the_expert_count_is_refused():
    with pytest.raises(ValueError, match="num_experts_per_tok 64 is more than the 8 experts"):
        plan(dict(MOE, num_experts_per_tok=64), to="2L")


def test_negative_expert_count_is_refused_not_a_negative_parameter_count():
    with pytest.raises(ValueError, match="num_local_experts is -8, expected at least 0"):
        plan(dict(MOE, num_local_experts=-8), to="2L")


def test_valid_moe_config_still_counts_active_below_total():
    rows = plan(MOE, to="2L")
    assert all(0 < r.active < r.params for r in rows)


@pytest.mark.parametrize("option", [dict(loops=4), dict(prelude=0), dict(coda=2)])
def test_loops_without_to_is_refused_not_ignored(option):
    with pytest.raises(ValueError, match="give --to"):
        PlanConfig(config="cherry-tiny", **option)


@pytest.mark.parametrize("context", [0, -5])
def test_plan_context_must_be_positive(context):
    with pytest.raises(ValueError, match="--context"):
        PlanConfig(config="cherry-tiny", to="4L", context=context)
