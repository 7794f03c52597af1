"""One output policy for every command that writes: never over its source, a run, or (without
--force) a non-empty directory; with --force only our own files are replaced. Each test is named
after the finding it guards against."""

import json
import os
import stat

import numpy as np
import pytest
from typer.testing import CliRunner

from cherry_mlx.models import build_model, load_model
from cherry_mlx.models.loading import save_model
from cherry_mlx.models.outputs import check_output, is_ours, remove_own


def _snapshot(root):
    """{relative path: bytes} of every file under ``root``."""
    return {
        os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
        for d, _, files in os.walk(root)
        for f in files
    }


@pytest.fixture
def model_dir(tmp_path, tiny_config):
    return save_model(build_model(tiny_config), tmp_path / "m", tiny_config)


@pytest.fixture
def run_dir(tmp_path, tiny_config):
    """A run as the trainer leaves it: a step checkpoint, best/, metrics."""
    run = tmp_path / "runs" / "r"
    model = build_model(tiny_config)
    step = save_model(model, run / "checkpoints" / "step-2", tiny_config)
    (step / "trainer_state.json").write_text('{"step": 2}')
    save_model(model, run / "best", tiny_config)
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n')
    return run


def _cli(args):
    from cli.main import app

    return CliRunner().invoke(app, args)


def test_quantize_run_onto_itself_is_refused_and_keeps_its_checkpoints(run_dir):
    before = _snapshot(run_dir)
    for force in ([], ["--force"]):
        res = _cli(["quantize", str(run_dir), "-o", str(run_dir), "--eval-batches", "0", *force])
        assert isinstance(res.exception, ValueError), res.output
        assert "contains the source" in str(res.exception)
    assert _snapshot(run_dir) == before


def test_quantize_onto_its_source_model_is_refused(model_dir):
    res = _cli(["quantize", str(model_dir), "-o", str(model_dir), "--eval-batches", "0"])
    assert isinstance(res.exception, ValueError) and "is the source" in str(res.exception)


def test_quantize_into_precious_dir_needs_force_and_keeps_unrelated_files(tmp_path, model_dir):
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "notes.txt").write_text("mine")
    (precious / "sub" / "data.bin").write_bytes(b"\x00\x01")
    res = _cli(["quantize", str(model_dir), "-o", str(precious), "--eval-batches", "0"])
    assert isinstance(res.exception, ValueError) and "--force" in str(res.exception)
    assert sorted(os.listdir(precious)) == ["notes.txt", "sub"]
    res = _cli(["quantize", str(model_dir), "-o", str(precious), "--eval-batches", "0", "--force"])
    assert res.exit_code == 0, res.output
    assert (precious / "notes.txt").read_text() == "mine"
    assert (precious / "sub" / "data.bin").read_bytes() == b"\x00\x01"
    _, cfg = load_model(precious)
    assert cfg["quantization"]["bits"] == 4


def test_force_over_a_previous_output_replaces_it_whole_and_drops_stale_shards(
    tmp_path, tiny_config
):
    out = tmp_path / "out"
    save_model(build_model(tiny_config), out, tiny_config)
    (out / "model-00002-of-00002.safetensors").write_bytes(b"stale")  # from an older save
    check_output(out, force=True)  # a model: allowed with --force
    model = build_model(tiny_config)
    save_model(model, out, tiny_config)
    assert sorted(p.name for p in out.glob("model*.safetensors")) == ["model.safetensors"]
    loaded, _ = load_model(out)
    np.testing.assert_array_equal(
        np.array(loaded.model.embed_tokens.weight), np.array(model.model.embed_tokens.weight)
    )


def test_stale_shard_is_dropped_even_beside_user_files(tmp_path, tiny_config):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.txt").write_text("user")
    (out / "model-00001-of-00002.safetensors").write_bytes(b"stale")
    save_model(build_model(tiny_config), out, tiny_config)
    assert (out / "README.txt").read_text() == "user"
    assert not (out / "model-00001-of-00002.safetensors").exists()
    load_model(out)


def test_save_model_never_swaps_away_a_run(run_dir, tiny_config):
    before = _snapshot(run_dir)
    with pytest.raises(ValueError, match="holds a training run"):
        save_model(build_model(tiny_config), run_dir, tiny_config)
    assert _snapshot(run_dir) == before


def test_run_dir_is_refused_as_output_even_with_force(run_dir, model_dir):
    with pytest.raises(ValueError, match="holds a training run.*even with --force"):
        check_output(run_dir, [model_dir], force=True)


def test_output_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_output(tmp_path / "f.txt", force=True)


def test_tokenizer_train_into_a_trained_model_is_refused_even_with_force(model_dir):
    (model_dir / "tokenizer.json").write_text('{"keep": true}')
    before = _snapshot(model_dir)
    for force in ([], ["--force"]):
        res = _cli(["tokenizer", "train", "-o", str(model_dir), *force])
        assert isinstance(res.exception, ValueError), res.output
    assert "holds a trained model" in str(res.exception)
    assert _snapshot(model_dir) == before


def test_tokenizer_train_into_non_empty_dir_needs_force(tmp_path):
    preset = tmp_path / "preset"
    preset.mkdir()
    (preset / "config.json").write_text("{}")
    res = _cli(["tokenizer", "train", "-o", str(preset)])
    assert isinstance(res.exception, ValueError) and "--force" in str(res.exception)


def test_tokenizer_train_into_its_corpus_dir_is_refused(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("hello world\n")
    res = _cli(["tokenizer", "train", "-d", str(corpus / "a.txt"), "-o", str(corpus), "--force"])
    assert isinstance(res.exception, ValueError) and "contains the source" in str(res.exception)


def test_upscale_onto_its_source_is_refused(model_dir):
    before = _snapshot(model_dir)
    res = _cli(["upscale", str(model_dir), "--to", "3L", "-o", str(model_dir), "--force"])
    assert isinstance(res.exception, ValueError) and "is the source" in str(res.exception)
    assert _snapshot(model_dir) == before


def test_upscale_into_non_empty_dir_needs_force(tmp_path, model_dir):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("k")
    res = _cli(["upscale", str(model_dir), "--to", "3L", "-o", str(out)])
    assert isinstance(res.exception, ValueError)
    res = _cli(["upscale", str(model_dir), "--to", "3L", "-o", str(out), "--force"])
    assert res.exit_code == 0, res.output
    assert (out / "keep.txt").read_text() == "k"
    assert load_model(out)[1]["num_hidden_layers"] == 3


def test_compress_onto_its_source_is_refused_before_any_work(run_dir):
    from cherry_mlx.compression.config import CompressConfig
    from cherry_mlx.compression.heal import compress

    cfg = CompressConfig.from_flat(model=str(run_dir), out=str(run_dir), to="1L", force=True)
    before = _snapshot(run_dir)
    with pytest.raises(ValueError, match="contains the source"):
        compress(cfg, log=lambda *a: None)
    assert _snapshot(run_dir) == before


def test_fuse_out_onto_an_expert_is_refused_before_any_work(model_dir):
    from cherry_mlx.fusion.config import FuseConfig
    from cherry_mlx.fusion.run import fuse

    cfg = FuseConfig.from_flat(experts=[str(model_dir)], out=str(model_dir), force=True)
    with pytest.raises(ValueError, match="is the source"):
        fuse(cfg)


def test_force_options_exist_on_every_writing_command():
    for args in (
        ["quantize"], ["upscale"], ["compress"], ["fuse"], ["tokenizer", "train"],
        ["cabstractor", "train"],
    ):  # fmt: skip
        res = _cli([*args, "--help"])
        assert "--force" in res.output, args


def test_remove_own_deletes_a_previous_stage_run_but_never_user_files(tmp_path, run_dir):
    assert is_ours(run_dir)
    remove_own(run_dir)
    assert not run_dir.exists()
    user = tmp_path / "user"
    (user / "checkpoints").mkdir(parents=True)
    (user / "thesis.tex").write_text("x")
    with pytest.raises(ValueError, match="did not write"):
        remove_own(user)
    assert (user / "thesis.tex").exists()


def test_saved_models_get_the_umask_mode_not_0700(tmp_path, tiny_config):
    old = os.umask(0o022)
    try:
        out = save_model(build_model(tiny_config), tmp_path / "m", tiny_config)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "config.json").stat().st_mode) == 0o644
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 64


def test_cabstractor_out_onto_its_features_is_refused_before_training(tmp_path, model_dir):
    feats = tmp_path / "feats"
    feats.mkdir()
    (feats / "texts.jsonl").write_text('{"id": "a", "text": "x"}\n')
    before = _snapshot(feats)
    res = _cli(["cabstractor", "train", str(feats), "--model", str(model_dir), "-o", str(feats)])
    assert isinstance(res.exception, ValueError) and "is the source" in str(res.exception)
    assert _snapshot(feats) == before


def test_compress_again_into_its_out_needs_force_and_then_replaces_its_stage_runs(
    tmp_path, tiny_config
):
    from _train_helpers import source_and_data

    from cherry_mlx.compression.heal import CompressConfig, compress

    src_dir, data = source_and_data(tiny_config, tmp_path, layers=4, n=2)
    out = tmp_path / "out"
    kw = dict(model=str(src_dir), out=str(out), to="2L", pre_unroll_steps=1, heal_steps=0,
              batch_size=2, seq_len=16, warmup=0)  # fmt: skip
    # what an earlier compress left (its stage run, model, report) beside a user's file
    old_stage = out / "heal-1-merged" / "checkpoints" / "step-9"
    save_model(build_model(tiny_config), old_stage, tiny_config)
    (old_stage / "trainer_state.json").write_text('{"step": 9}')
    save_model(build_model(tiny_config), out / "model", tiny_config)
    (out / "report.json").write_text("{}")
    (out / "my-notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="--force"):
        compress(CompressConfig.from_flat(**kw), log=lambda *_: None, data=data)
    res = compress(CompressConfig.from_flat(**kw, force=True), log=lambda *_: None, data=data)
    assert [s.name for s in res.stages] == ["source", "merged", "merged-healed"]
    assert (out / "my-notes.txt").read_text() == "mine"
    assert load_model(out / "model")[1]["num_hidden_layers"] == 2
    steps = sorted(p.name for p in (out / "heal-1-merged" / "checkpoints").iterdir())
    assert steps == ["step-1"]  # the old stage run was replaced, not resumed or refused
