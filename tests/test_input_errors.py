"""Bad settings, option values and model configs give one line naming the file/value and the
fix before any work. Each test is named after the finding it guards."""

import json
import math
import sys
from pathlib import Path

import mlx.core as mx
import pytest
from _input_helpers import cli, one_line, write

from cherry_mlx._io import InputError, read_bytes
from cherry_mlx.compression.config import CompressConfig
from cherry_mlx.decoding.generate import SamplingConfig, check_serving_options
from cherry_mlx.evaluation.config import EvalConfig
from cherry_mlx.fusion.config import DistillConfig, FuseConfig
from cherry_mlx.models import build_model, save_model
from cherry_mlx.models.loading import load_config, load_model
from cherry_mlx.training import TrainConfig
from cherry_mlx.training.config import resolve_config


# -- settings files go through the typed parser ------------------------------------------------
def test_yaml_learning_rate_1e_4_string_is_coerced_to_float(tmp_path):
    # YAML 1.1 reads 1e-4 (no dot) as a string; the command line would parse it as a float
    f = write(tmp_path / "s.yaml", "learning_rate: 1e-4\nsteps: '12'\ncategories: factual\n")
    cfg = resolve_config({}, f)
    assert cfg.learning_rate == 1e-4 and isinstance(cfg.learning_rate, float)
    assert cfg.steps == 12 and cfg.categories == ["factual"]


def test_settings_file_bad_value_names_file_and_key(tmp_path):
    f = write(tmp_path / "s.yaml", "steps: many\n")
    with pytest.raises(ValueError) as err:
        resolve_config({}, f)
    assert str(f) in one_line(err) and "steps" in str(err.value)
    f = write(tmp_path / "s.json", '{"learning_rate": "fast"}')
    with pytest.raises(ValueError, match=r"s\.json: learning_rate: 'fast' is not a number"):
        TrainConfig.from_file(f)


def test_settings_file_nan_and_bool_for_int_rejected(tmp_path):
    f = write(tmp_path / "s.yaml", "learning_rate: .nan\n")
    with pytest.raises(ValueError, match="not a finite number"):
        resolve_config({}, f)
    f = write(tmp_path / "s.json", '{"steps": true}')
    with pytest.raises(ValueError, match="steps: True is not an integer"):
        resolve_config({}, f)


def test_settings_file_not_utf8_deeply_nested_or_a_directory(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ValueError, match=r"s\.yaml:1: not valid UTF-8 \(byte e9"):
        resolve_config({}, bad)
    deep = write(tmp_path / "d.json", "[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply") as err:
        resolve_config({}, deep)
    one_line(err)
    with pytest.raises(ValueError, match="is a directory"):
        resolve_config({}, tmp_path)


def test_lone_surrogate_in_a_yaml_settings_file(tmp_path):
    f = write(tmp_path / "s.yaml", 'name: "run\\ud800"\n')
    with pytest.raises(ValueError, match=r"s\.yaml: name: lone surrogate '\\ud800'"):
        resolve_config({}, f)


def test_unreadable_file_is_one_line(tmp_path, monkeypatch):
    f = write(tmp_path / "data.jsonl", "{}")

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(InputError, match="permission denied.*chmod u\\+r") as err:
        read_bytes(f, "data file")
    assert str(f) in one_line(err)


# -- command-line values ------------------------------------------------------------------------
def test_seed_minus_1_rejected_everywhere():
    with pytest.raises(ValueError, match="--seed -1: must be >= 0"):
        TrainConfig(seed=-1)
    with pytest.raises(ValueError, match="--seed -1"):
        EvalConfig(seed=-1)
    with pytest.raises(ValueError, match="--seed -1"):
        check_serving_options(None, 10, False, None, seed=-1)
    res = cli("generate", "nowhere", "-p", "hi", "--seed", "-1")
    assert res.exit_code == 2 and "greater than or equal to 0" in res.output


@pytest.mark.parametrize(
    "args",
    [
        ["data", "build", "--seed", "-1"],
        ["ssgt-eval", "nowhere", "--seed", "-1"],
        ["cabstractor", "train", "--seed", "-1"],
        ["eval", "nowhere", "--seed", "-1"],
        ["train", "--seed", "-1"],
    ],
    ids=lambda a: a[0],
)
def test_seed_minus_1_rejected_by_every_command(args):
    res = cli(*args)
    assert res.exit_code != 0
    err = res.exception
    if isinstance(err, ValueError):  # the settings dataclass said it
        assert "--seed -1" in str(err) and "\n" not in str(err)
    else:  # typer's range check: a usage error before anything runs
        assert "greater than or equal to 0" in res.output, res.output


@pytest.mark.parametrize(
    "make",
    [
        lambda: SamplingConfig(temp=math.nan),
        lambda: SamplingConfig(repetition_penalty=math.nan),
        lambda: SamplingConfig(top_p=math.inf),
        lambda: TrainConfig(lam=math.nan),
        lambda: TrainConfig(learning_rate=math.inf),
        lambda: CompressConfig.from_flat(lam=math.nan),
        lambda: FuseConfig.from_flat(experts=["a"], balance=math.nan),
        lambda: DistillConfig.from_flat(beta=math.inf),
    ],
    ids=[
        "temp",
        "repetition-penalty",
        "top-p",
        "lambda",
        "lr",
        "compress-lambda",
        "balance",
        "beta",
    ],
)
def test_nan_or_inf_float_option_rejected(make):
    with pytest.raises(ValueError, match="finite") as err:
        make()
    one_line(err)


def test_temp_nan_on_the_command_line_is_one_line_error():
    res = cli("generate", "nowhere", "-p", "hi", "--temp", "nan")
    assert res.exit_code != 0
    assert isinstance(res.exception, (ValueError, SystemExit))
    if isinstance(res.exception, ValueError):
        assert "--temp nan: not a finite number" in str(res.exception)


@pytest.mark.parametrize(
    "make, flag",
    [
        (lambda: CompressConfig.from_flat(heal_steps=-1), "--heal-steps -1"),
        (lambda: CompressConfig.from_flat(pre_unroll_steps=-2), "--pre-unroll-steps -2"),
        (lambda: FuseConfig.from_flat(experts=["a"], steps=-3), "--steps -3"),
        (lambda: FuseConfig.from_flat(experts=["a"], balance=-1.0), "--balance -1.0"),
        (lambda: FuseConfig.from_flat(experts=["a"], top_k=0), "--top-k 0"),
    ],
)
def test_negative_counts_rejected(make, flag):
    with pytest.raises(ValueError, match=flag):
        make()


def test_lambda_1_5_rejected_before_any_work(tmp_path):
    # the model does not exist: the error must be about --lambda, found before loading anything
    res = cli("compress", str(tmp_path / "nope"), "--to", "1L", "--lambda", "1.5")
    assert res.exit_code != 0 and "--lambda 1.5: must be in [0, 1]" in str(res.exception)


# -- model configs and weights ------------------------------------------------------------------
def model_dir(tmp_path, cfg) -> Path:
    d = tmp_path / "m"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return d


@pytest.mark.parametrize(
    "edit, expect",
    [
        (lambda c: [c], "holds a JSON list"),
        (lambda c: {}, "is empty"),
        (lambda c: {"model_type": "llama", "hidden_size": 64}, "lacks num_hidden_layers"),
        (lambda c: {**c, "num_hidden_layers": "8"}, "num_hidden_layers is '8', not an integer"),
        (lambda c: {**c, "num_hidden_layers": 0}, "num_hidden_layers is 0"),
        (lambda c: {**c, "hidden_size": 86, "num_attention_heads": 2}, "must be even"),
        (lambda c: {**c, "head_dim": 43}, "head dimension is 43"),
        (lambda c: {**c, "rope_theta": math.nan}, "rope_theta is nan"),
        (lambda c: {**c, "num_key_value_heads": 3}, "not a multiple of num_key_value_heads"),
    ],
    ids=["list", "empty", "partial", "quoted", "zero-layers", "odd-head", "odd-head-dim",
         "nan-rope-theta", "kv-heads"],
)  # fmt: skip
def test_bad_config_json_is_one_line(tmp_path, tiny_config, edit, expect):
    d = model_dir(tmp_path, edit(tiny_config))
    with pytest.raises(ValueError, match=expect) as err:
        load_config(d)
    assert str(d / "config.json") in one_line(err)


def test_zero_layer_preset_rejected(tmp_path, tiny_config):
    from cherry_mlx.models.info import describe

    d = model_dir(tmp_path, {**tiny_config, "num_hidden_layers": 0})
    with pytest.raises(ValueError, match="num_hidden_layers is 0; it must be at least 1") as err:
        describe(str(d))  # `cherry-mlx info PRESET`, and training from it, read it this way
    one_line(err)


def test_nan_weights_refused(tmp_path, tiny_config):
    model = build_model(tiny_config)
    mx.eval(model.parameters())
    model.layers[0].mlp.up_proj.weight[0, 0] = math.nan
    path = save_model(model, tmp_path / "m", tiny_config)
    with pytest.raises(ValueError, match="up_proj.weight holds NaN") as err:
        load_model(path)
    one_line(err)


def test_nan_rope_theta_in_a_saved_model_refused(tmp_path, tiny_config):
    model = build_model(tiny_config)
    mx.eval(model.parameters())
    path = save_model(model, tmp_path / "m", tiny_config)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "rope_theta": math.nan}))
    with pytest.raises(ValueError, match="rope_theta is nan"):
        load_model(path)


def test_cli_prints_bad_config_json_as_one_line(tmp_path, monkeypatch, capsys):
    from cherry_mlx_cli.main import main

    d = model_dir(tmp_path, "[1, 2]")
    monkeypatch.setattr(sys, "argv", ["cherry-mlx", "info", str(d)])
    with pytest.raises(SystemExit) as ex:
        main()
    err = capsys.readouterr().err
    assert ex.value.code == 2 and "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("cherry-mlx: error:")]
    assert len(lines) == 1 and "holds a JSON list" in lines[0]
