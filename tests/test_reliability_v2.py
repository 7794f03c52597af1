"""Second hostile-input round: one test per finding, named after the behaviour it guards."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cherry_mlx.models.outputs import make_tmp_dir, staged_dir, sweep_stale

write_gguf = pytest.importorskip("test_gguf").write_gguf


def _cli(args):
    from cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _files(root):
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs
    )


def test_stale_tmp_of_a_killed_run_is_reclaimed_with_a_notice(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    stale = tmp_path / f".out.tmp-{dead}-abcdef"
    legacy = tmp_path / ".out.tmp-k2j9x1"  # tempfile.mkdtemp's name: no pid
    live = tmp_path / f".out.tmp-{os.getppid()}-123456"  # a writer still running
    other = tmp_path / f".other.tmp-{dead}-abcdef"  # another output's: not ours to judge
    for d in (stale, legacy, live, other):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"\0" * 3_000_000)
    tmp = make_tmp_dir(tmp_path / "out")
    assert not stale.exists() and not legacy.exists()
    assert live.exists() and other.exists() and tmp.is_dir()
    err = capsys.readouterr().err
    assert err.count("reclaimed") == 2 and "2.9 MB" in err
    assert sweep_stale(tmp_path / "out") == 0 and tmp.is_dir()  # this live process's own


def test_interrupted_staging_is_removed_and_the_target_kept(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")
    with pytest.raises(KeyboardInterrupt):
        with staged_dir(out) as tmp:
            (tmp / "model.safetensors").write_bytes(b"\0" * 1000)
            raise KeyboardInterrupt
    assert _files(tmp_path) == ["out/config.json"]
    assert "interrupted: removed the partial" in capsys.readouterr().err


def test_sigterm_during_import_leaves_no_hidden_folder(tmp_path):
    write_gguf(tmp_path / "m.gguf")
    code = (
        "import os, signal, cherry_mlx.models.outputs as o\n"
        "real = o.replace_dir\n"
        "def slow(tmp, out, own=frozenset()):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    real(tmp, out, own)\n"
        "o.replace_dir = slow\n"
        "from cherry_mlx.models.gguf import import_gguf\n"
        f"import_gguf({str(tmp_path / 'm.gguf')!r}, {str(tmp_path / 'out')!r})\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 143, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]
    assert "reclaimed" in res.stderr


def test_import_force_onto_the_folder_holding_the_gguf_is_refused(tmp_path):
    write_gguf(tmp_path / "m.gguf")
    res = _cli(["import", tmp_path / "m.gguf", "-o", tmp_path, "--force"])
    assert "contains the source" in str(res.exception)
    assert _files(tmp_path) == ["m.gguf"]


def test_import_to_dot_writes_into_the_working_folder(tmp_path, monkeypatch):
    write_gguf(tmp_path / "m.gguf")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "keep.txt").write_text("k")
    monkeypatch.chdir(tmp_path / "w")
    res = _cli(["import", tmp_path / "m.gguf", "-o", ".", "--force"])
    assert res.exit_code == 0, res.output
    assert {"keep.txt", "config.json", "model.safetensors"} <= set(os.listdir("."))


def test_info_on_a_gguf_writes_nothing(tmp_path):
    write_gguf(tmp_path / "model.gguf")
    hf = tmp_path / "model-hf"  # an older import of another file, with the user's files
    hf.mkdir()
    (hf / "gguf_source.json").write_text(json.dumps({"file": "/elsewhere/x.gguf"}))
    (hf / "notes.txt").write_text("mine")
    (hf / "adapter.safetensors").write_bytes(b"x")
    before = _files(tmp_path)
    res = _cli(["info", tmp_path / "model.gguf", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["unique_layers"] == 2 and report["total"] > 0
    assert _files(tmp_path) == before


def test_cached_import_never_replaces_another_files_import(tmp_path, monkeypatch):
    import cherry_mlx.models.gguf as gguf_module
    from cherry_mlx.models import resolve

    monkeypatch.setattr(gguf_module, "IMPORTED_DIR", tmp_path / "imported")
    write_gguf(tmp_path / "model.gguf")
    hf = tmp_path / "model-hf"
    hf.mkdir()
    (hf / "gguf_source.json").write_text(json.dumps({"file": "/elsewhere/x.gguf"}))
    (hf / "config.json").write_text("{}")
    assert resolve(str(tmp_path / "model.gguf")) == tmp_path / "imported" / "model"
    assert sorted(os.listdir(hf)) == ["config.json", "gguf_source.json"]


def _env(**kw):
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **kw}


def test_data_build_default_output_follows_cherry_mlx_weights(tmp_path):
    code = "from cherry_mlx.data.build import BuildConfig; print(BuildConfig().out_dir)"
    out = subprocess.run([sys.executable, "-c", code], env=_env(CHERRY_MLX_WEIGHTS=str(tmp_path)),
                         capture_output=True, text=True)  # fmt: skip
    assert out.stdout.strip() == str(tmp_path / "data")


def test_empty_cherry_mlx_weights_means_unset(tmp_path):
    code = "from cherry_mlx.models.presets import list_presets; print(list_presets())"
    out = subprocess.run([sys.executable, "-c", code], env=_env(CHERRY_MLX_WEIGHTS=""),
                         capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert "cherry-tiny" in out.stdout


def test_unknown_preset_with_weights_nowhere_names_the_variable(monkeypatch, tmp_path):
    import cherry_mlx.models.loading as loading
    import cherry_mlx.models.presets as presets
    from cherry_mlx.models import resolve

    monkeypatch.setenv("CHERRY_MLX_WEIGHTS", str(tmp_path / "nowhere"))
    monkeypatch.setattr(presets, "WEIGHTS_DIR", tmp_path / "nowhere")
    monkeypatch.setattr(loading, "WEIGHTS_DIR", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="CHERRY_MLX_WEIGHTS=.*does not exist"):
        resolve("cherry-tiny")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scale", "nan"], "--scale nan must be a positive"),
        (["--scale", "0"], "--scale 0.0 must be a positive"),
        (["--tokenizer", "GARBAGE"], "is not a tokenizer.json"),
    ],
)
def test_data_build_bad_option_refused_before_writing(tmp_path, args, message):
    (tmp_path / "g.json").write_text("garbage")
    args = [str(tmp_path / "g.json") if a == "GARBAGE" else a for a in args]
    res = _cli(["data", "build", "-o", tmp_path / "d", "--no-prose", *args])
    assert message in str(res.exception)
    assert not (tmp_path / "d").exists() and not list(tmp_path.glob(".d.*"))


def test_tokenizer_model_max_length_must_be_positive():
    from cherry_mlx.tokenizer.train import TokenizerConfig

    with pytest.raises(ValueError, match="--model-max-length -5 must be at least 1"):
        TokenizerConfig(model_max_length=-5)


def test_resume_with_another_preset_is_a_conflict_not_a_missing_parameter_dump(tmp_path):
    from cherry_mlx.training.config import TrainConfig, resolve_config

    run = tmp_path / "r"
    run.mkdir()
    TrainConfig(preset="cherry-tiny", steps=6).save(run / "train_config.json")
    with pytest.raises(ValueError, match="--preset cherry-48l conflicts"):
        resolve_config({"resume": str(run), "preset": "cherry-48l"})
    assert resolve_config({"resume": str(run), "preset": "cherry-tiny"}).steps == 6


@pytest.fixture
def short_model(tiny_config):
    import mlx.core as mx

    from cherry_mlx.models import build_model
    from cherry_mlx.models.loading import load_tokenizer
    from cherry_mlx.models.presets import WEIGHTS_DIR

    model = build_model({**tiny_config, "vocab_size": 4096, "max_position_embeddings": 16})
    mx.eval(model.parameters())
    return model, load_tokenizer(WEIGHTS_DIR / "cherry-tiny")


def test_prompt_past_the_context_is_cut_to_it_before_prefill(short_model, capsys):
    from cherry_mlx.decoding.session import generate_text

    model, tok = short_model
    *_, (_, stats) = generate_text(model, tok, "abc " * 2000, max_tokens=1, raw=True)
    assert stats.prompt_tokens == 16  # not the ~2000 the prompt encodes to
    assert "only its last 16 tokens are used" in capsys.readouterr().err


def test_prompt_of_zero_tokens_is_a_one_line_error(short_model):
    from cherry_mlx.decoding.session import generate_text

    model, tok = short_model
    tok._tokenizer.encode = lambda *a, **k: []  # a tokenizer that drops this text entirely
    with pytest.raises(ValueError, match="encodes to 0 tokens"):
        list(generate_text(model, tok, "hi", max_tokens=1, raw=True))


def test_system_prompt_longer_than_context_is_refused_before_prefill(short_model):
    from cherry_mlx.decoding.chat import ChatConfig, ChatSession

    model, tok = short_model
    with pytest.raises(ValueError, match="--system is .* longer than the model's context of 16"):
        ChatSession(model, tok, ChatConfig(system="x " * 100, speculative=False))


def test_chat_message_longer_than_context_is_refused_and_dropped(short_model):
    from cherry_mlx.decoding.chat import ChatConfig, ChatSession

    model, tok = short_model
    session = ChatSession(model, tok, ChatConfig(speculative=False, max_tokens=1))
    with pytest.raises(ValueError, match="more than the model's context of 16"):
        list(session.send("word " * 200))
    assert session.messages == [] and session.fed == []


@pytest.mark.parametrize("command", [["generate", "-p", "hi"], ["generate", "-p", "-"], ["chat"]])
def test_closed_stdin_is_not_mistaken_for_the_weights_file(tmp_path, tiny_config, command):
    from cherry_mlx.models import build_model
    from cherry_mlx.models.loading import save_model
    from cherry_mlx.models.presets import WEIGHTS_DIR

    cfg = {**tiny_config, "vocab_size": 4096}
    path = save_model(
        build_model(cfg), tmp_path / "m", cfg, tokenizer_dir=WEIGHTS_DIR / "cherry-tiny"
    )
    code = "import sys; from cli.main import main; sys.argv = sys.argv[1:]; main()"
    args = [sys.executable, "-c", code, "cherry-mlx", command[0], str(path), "-m", "2",
            "--no-speculative", *command[1:]]  # fmt: skip
    res = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         env=_env(), preexec_fn=lambda: os.close(0))  # fmt: skip
    assert "Traceback" not in res.stderr and "load_safetensors" not in res.stderr, res.stderr
    if command[-1] == "-":
        assert res.returncode == 2 and "stdin is closed" in res.stderr
    else:
        assert res.returncode == 0, res.stderr


def test_refused_resume_with_other_batching_leaves_the_run_config_and_resumable(tmp_path):
    """A resume whose --seq-len/--batch-size/--steps do not fit the run's data state is refused,
    and the run's train_config.json still holds the settings it started with, so a plain
    --resume continues it."""
    from cherry_mlx.models.presets import WEIGHTS_DIR

    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 60), ("valid", 8)):
        lines = (WEIGHTS_DIR / "data/default" / f"{split}.jsonl").read_text().splitlines()[:n]
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    common = ["train", "--runs-dir", tmp_path / "runs", "--no-demo", "--eval-every", 0]
    start = ["--preset", "cherry-tiny", "--data", data, "--steps", 4, "--batch-size", 2]
    start += ["--seq-len", 64, "--save-every", 2, "--stop-after", 2, "--name", "r"]
    first = _cli(common + start)
    assert first.exit_code == 0, first.output
    saved = (tmp_path / "runs/r/train_config.json").read_text()
    bad = _cli(common + ["--resume", tmp_path / "runs/r", "--seq-len", 32, "--batch-size", 4,
                         "--steps", 8])  # fmt: skip
    assert bad.exit_code != 0 and "drop --seq-len" in str(bad.exception)
    assert (tmp_path / "runs/r/train_config.json").read_text() == saved
    again = _cli(common + ["--resume", tmp_path / "runs/r"])
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "runs/r/train_config.json").read_text())["steps"] == 4


def test_long_prefill_shows_its_progress(tiny_config, capsys, monkeypatch):
    """A prompt past LONG_PREFILL tokens reports each chunk on stderr, ending at the total, and
    the hidden states are those of one unchunked pass."""
    import mlx.core as mx
    import numpy as np

    from cherry_mlx.decoding import generate as g
    from cherry_mlx.models import build_model

    model = build_model(tiny_config)
    mx.eval(model.parameters())
    monkeypatch.setattr(g, "LONG_PREFILL", 40)
    tokens = mx.array(np.arange(50) % 256, dtype=mx.int32)
    h = g.prefill(model, tokens, model.make_cache(), step=16)
    err = capsys.readouterr().err
    assert "[prefill 16/50 prompt tokens" in err and "[prefill 50/50 prompt tokens" in err
    whole = model.hidden(tokens[None], cache=model.make_cache())
    np.testing.assert_allclose(np.array(h), np.array(whole), atol=1e-4)
    g.prefill(model, tokens[:30], model.make_cache(), step=16)
    assert "prefill" not in capsys.readouterr().err  # short prompts stay quiet
