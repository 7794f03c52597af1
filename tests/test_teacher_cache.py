"""Teacher cache: round trip against the model's own logits, resume after SIGKILL, and one-line
errors for corrupted or mismatched caches."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from cherry_mlx.data.teacher_cache import (
    CacheError,
    CacheWriter,
    TeacherCache,
    model_fingerprint,
)
from cherry_mlx.models import build_model, save_model
from cherry_mlx.training.teacher import build_cache
from cherry_mlx.training.teacher_config import TeacherConfig, parse_layers

ROOT = Path(__file__).resolve().parents[1]
TOK = ROOT / "weights" / "cherry-tiny"


def tiny_teacher(path: Path, seed: int = 0) -> Path:
    cfg = json.loads((TOK / "config.json").read_text())
    cfg.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, head_dim=16)
    mx.random.seed(seed)
    model = build_model(cfg)
    mx.eval(model.parameters())
    save_model(model, path, cfg, TOK)
    return path


def prose(path: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    words = "the cat sat on a mat while old dogs ran far over green hills".split()
    with open(path, "w") as f:
        for _ in range(n):
            f.write(json.dumps({"text": " ".join(rng.choice(words, 30))}) + "\n")
    return path


def config(model, out, data, **kw):
    d = dict(model=str(model), out=str(out), data=str(data), k=8, seq_len=16, rows_per_shard=4,
             batch_size=4, hidden_layers="all")  # fmt: skip
    d.update(kw)
    return TeacherConfig(**d)


def test_round_trip_matches_the_models_logits(tmp_path):
    model_dir = tiny_teacher(tmp_path / "m")
    cache_dir = build_cache(config(model_dir, tmp_path / "c", prose(tmp_path / "p.jsonl")), log=id)
    cache = TeacherCache.open(cache_dir, fingerprint=model_fingerprint(model_dir))
    assert cache.rows >= 8 and cache.k == 8 and cache.hidden_layers == [0, 1, 2]
    from cherry_mlx.models.loading import load_model

    model, _ = load_model(model_dir)
    b = cache.row_batch([0, cache.rows - 1])
    logits = np.array(model(mx.array(b["inputs"])).astype(mx.float32))  # (2, T, V)
    top = np.argsort(-logits, axis=-1)[..., :8]
    assert (b["topk_idx"].astype(np.int64) == top).all()
    assert b["topk_idx"].dtype == np.uint16  # vocab 4096 fits
    np.testing.assert_allclose(b["topk_val"], np.take_along_axis(logits, top, -1), atol=2e-2)
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    np.testing.assert_allclose(b["lse"], lse, rtol=1e-5, atol=1e-4)
    # the residual stream after the last block, through the final norm, gives the same logits
    h = mx.array(b["hidden-2"].astype(np.float32))
    again = np.array(model.logits(model.model.norm(h)))
    np.testing.assert_allclose(again, logits, atol=0.05)
    np.testing.assert_array_equal(b["targets"][:, :-1], b["inputs"][:, 1:])


def test_resume_after_sigkill_equals_an_uninterrupted_build(tmp_path):
    model_dir = tiny_teacher(tmp_path / "m")
    data = prose(tmp_path / "p.jsonl")
    killed = tmp_path / "killed"
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
from cherry_mlx.training.teacher import build_cache
from cherry_mlx.training.teacher_config import TeacherConfig
def log(line):
    if line.startswith("shard 2/"):
        os.kill(os.getpid(), signal.SIGKILL)
cfg = TeacherConfig(model={str(model_dir)!r}, out={str(killed)!r}, data={str(data)!r}, k=8,
                    seq_len=16, rows_per_shard=4, batch_size=4, hidden_layers="all")
build_cache(cfg, log=log)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((killed / "manifest.json").read_text())["shards"][-1]["index"] == 1
    lines = []
    build_cache(config(model_dir, killed, data), log=lines.append)
    assert any(line.startswith("resuming: 2 of") for line in lines)
    fresh = build_cache(config(model_dir, tmp_path / "fresh", data), log=id)
    a, b = TeacherCache.open(killed), TeacherCache.open(fresh)
    assert a.rows == b.rows
    ra, rb = a.row_batch(range(a.rows)), b.row_batch(range(b.rows))
    for key in rb:
        np.testing.assert_array_equal(ra[key], rb[key])
    assert not list(killed.glob("*.tmp-*"))


def test_mismatched_and_corrupted_caches_are_one_line_errors(tmp_path):
    model_dir = tiny_teacher(tmp_path / "m")
    other = tiny_teacher(tmp_path / "other", seed=1)
    data = prose(tmp_path / "p.jsonl")
    cache_dir = build_cache(config(model_dir, tmp_path / "c", data), log=id)
    with pytest.raises(CacheError, match="another source model") as e:
        TeacherCache.open(cache_dir, fingerprint=model_fingerprint(other))
    assert "\n" not in str(e.value)
    with pytest.raises(CacheError, match="another source model"):  # resuming onto it too
        build_cache(config(other, cache_dir, data), log=id)
    with pytest.raises(CacheError, match="other settings"):
        build_cache(config(model_dir, cache_dir, data, k=4), log=id)
    with pytest.raises(CacheError, match="not .*layers|hidden states at layers"):
        TeacherCache.open(build_cache(config(model_dir, tmp_path / "nh", data, hidden_layers=""),
                                      log=id), need_hidden=[1])  # fmt: skip
    (cache_dir / "shard-00000" / "topk_val.npy").write_bytes(b"garbage")
    with pytest.raises(CacheError, match="topk_val.npy is missing or corrupted") as e:
        TeacherCache.open(cache_dir)
    assert "\n" not in str(e.value)
    (cache_dir / "manifest.json").write_text("{not json")
    with pytest.raises(CacheError, match="manifest.json is corrupted"):
        TeacherCache.open(cache_dir)
    with pytest.raises(CacheError, match="not found"):
        TeacherCache.open(tmp_path / "nowhere")


def test_writer_and_batches_without_a_model(tmp_path):
    settings = dict(origin="text", source="x", k=2, seq_len=3, rows_per_shard=2,
                    hidden_layers=[], sampling=None, vocab_size=10)  # fmt: skip
    w = CacheWriter(tmp_path / "c", settings, "f1")
    for i in range(3):
        n = 2
        w.write(i, dict(inputs=np.full((n, 3), i, np.int32), length=np.full((n,), 3, np.int32),
                        targets=np.zeros((n, 3), np.int32),
                        response=np.ones((n, 3), bool), level=np.zeros((n, 3), np.int8),
                        topk_idx=np.zeros((n, 3, 2), np.uint16),
                        topk_val=np.zeros((n, 3, 2), np.float16),
                        lse=np.zeros((n, 3), np.float32)))  # fmt: skip
    cache = TeacherCache.open(tmp_path / "c", fingerprint="f1")
    assert cache.rows == 6 and cache.tokens == 18
    seen = [b["inputs"][:, 0].tolist() for b in cache.batches(3, seed=1, epochs=2)]
    assert len(seen) == 4 and sorted(sum(seen[:2], [])) == [0, 0, 1, 1, 2, 2]
    with pytest.raises(CacheError, match="fewer than a batch"):
        next(cache.batches(7))


def test_parse_layers():
    assert parse_layers("all", 3) == [0, 1, 2, 3]
    assert parse_layers("2, 0", 3) == [0, 2] and parse_layers("", 3) == []
    assert parse_layers("last", 3) == [3]
    with pytest.raises(ValueError, match="0..3"):
        parse_layers("4", 3)


def test_generate_origin_supervises_only_the_generated_tokens(tmp_path):
    model_dir = tiny_teacher(tmp_path / "m")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["Hi", "Name a river"]))
    cfg = config(model_dir, tmp_path / "g", prompts, origin="generate", max_new_tokens=5,
                 seq_len=48, hidden_layers="", temperature=0.0)  # fmt: skip
    cache = TeacherCache.open(build_cache(cfg, log=id))
    assert cache.manifest["sampling"]["max_new_tokens"] == 5 and cache.rows == 2
    from cherry_mlx.models.loading import load_tokenizer

    tok = load_tokenizer(model_dir)
    b = cache.row_batch([0, 1])
    for i, p in enumerate(["Hi", "Name a river"]):
        ids = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True)
        n = len(ids)
        np.testing.assert_array_equal(b["inputs"][i, :n], ids)  # the prompt, then the answer
        resp = np.flatnonzero(b["response"][i])
        assert resp[0] == n - 1 and 1 <= len(resp) <= 5  # targets = the generated tokens only


def test_a_cache_of_the_previous_format_still_reads(tmp_path):
    """Format 1 had no length.npy: rows end after their last supervised position."""
    settings = dict(origin="generate", source="x", k=1, seq_len=4, rows_per_shard=2,
                    hidden_layers=[], sampling=None, vocab_size=10)  # fmt: skip
    w = CacheWriter(tmp_path / "c", settings, "f1")
    resp = np.array([[False, True, True, False], [True, True, True, True]])
    w.write(0, dict(inputs=np.ones((2, 4), np.int32), length=np.zeros(2, np.int32),
                    targets=np.zeros((2, 4), np.int32), response=resp,
                    level=np.zeros((2, 4), np.int8), topk_idx=np.zeros((2, 4, 1), np.uint16),
                    topk_val=np.zeros((2, 4, 1), np.float16),
                    lse=np.zeros((2, 4), np.float32)))  # fmt: skip
    (tmp_path / "c" / "shard-00000" / "length.npy").unlink()
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    (tmp_path / "c" / "manifest.json").write_text(
        json.dumps({**m, "format": "cherry-teacher-cache/1"})
    )
    assert TeacherCache.open(tmp_path / "c").lengths().tolist() == [3, 4]
    m["format"] = "cherry-teacher-cache/2"  # the current format without the file: corrupted
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(CacheError, match="length.npy is missing"):
        TeacherCache.open(tmp_path / "c")
