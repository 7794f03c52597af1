"""Small models and batches shared by the training, MTP and compression tests."""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np

from cherry_mlx.compression.heal import Data
from cherry_mlx.models import build_model, save_model
from cherry_mlx.training import TrainConfig, train
from cherry_mlx.training.data import CycleBatches


def synth_batches(n, B=4, T=24, seed=0, V=256):
    """A learnable pattern (odd tokens = previous + 1) with GT tags, in the batch contract."""
    r = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        toks = r.integers(0, V, (B, T + 1))
        toks[:, 1::2] = (toks[:, 0:-1:2] + 1) % V
        resp = np.zeros((B, T), bool)
        resp[:, 6:] = True
        level = ((r.random((B, T)) < 0.2) & resp).astype(np.int8)
        cat = np.where(level > 0, r.integers(0, 6, (B, T)), -1).astype(np.int8)
        out.append(
            dict(
                inputs=toks[:, :-1].astype(np.int32),
                targets=toks[:, 1:].astype(np.int32),
                response=resp,
                level=level,
                category=cat,
            )
        )
    return out


def base_cfg(tmp_path, **kw):
    """A small SGT run of cherry-tiny's settings written under tmp_path."""
    d = dict(
        preset="cherry-tiny",
        steps=8,
        name="run",
        runs_dir=str(tmp_path),
        eval_every=4,
        save_every=4,
        report_every=2,
        demo=False,
        warmup=2,
        learning_rate=3e-3,
        batch_size=4,
        seq_len=24,
    )
    d.update(kw)
    return TrainConfig(**d)


def run(cfg, tiny_config, data_seed=0, loss_fn=None, train_batches=None):
    """Train a fresh tiny model on ``synth_batches`` (seeded by ``cfg.seed``)."""
    mx.random.seed(cfg.seed)
    model = build_model(tiny_config)
    batches = train_batches or synth_batches(6, seed=data_seed)
    return train(
        cfg,
        model=model,
        loss_fn=loss_fn,
        train_data=CycleBatches(batches),
        valid_data=synth_batches(2, seed=99),
    )


def mtp_batch(inputs, targets, response=None):
    """A batch in the trainer's contract; every position a response unless ``response`` says."""
    B, T = inputs.shape
    resp = np.ones((B, T), bool) if response is None else response
    return {
        "inputs": mx.array(inputs, dtype=mx.int32),
        "targets": mx.array(targets, dtype=mx.int32),
        "response": mx.array(resp),
        "level": mx.zeros((B, T), dtype=mx.int8),
        "category": mx.full((B, T), -1, dtype=mx.int8),
    }


def log_softmax(x):
    """numpy log-softmax over the last axis (the independent reference)."""
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def counting_batches(vocab, n=2, B=2, T=16):
    """Counting sequences (t+1 follows t): a pattern a few SGT steps visibly learn."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        start = rng.integers(0, vocab, (B, 1))
        seq = (start + np.arange(T + 1)[None]) % vocab
        level = (np.arange(T)[None] % 4 == 0).repeat(B, 0).astype(np.int8)  # every 4th is GT
        out.append(
            {
                "inputs": seq[:, :-1].astype(np.int32),
                "targets": seq[:, 1:].astype(np.int32),
                "response": np.ones((B, T), bool),
                "level": level,
                "category": np.where(level > 0, 0, -1).astype(np.int8),
            }
        )
    return out


def source_and_data(tiny_config, tmp_path, layers, n):
    """A random ``layers``-layer source model saved in tmp_path/src, and learnable batches."""
    cfg = dict(tiny_config, num_hidden_layers=layers)
    src_dir = save_model(build_model(cfg), tmp_path / "src", cfg)
    batches = counting_batches(cfg["vocab_size"], n=n)
    return src_dir, Data(train=CycleBatches(batches), valid=batches, batch_size=2, seq_len=16)


CHERRY_TINY = Path(__file__).resolve().parents[1] / "weights" / "cherry-tiny"


def tiny_model_dir(path: Path, seed: int = 0) -> Path:
    """A tiny random model (hidden 64, 2 layers) saved with the 4096-token cherry-tiny
    tokenizer: a stand-in source for teacher caches, MTP heads and DWQ."""
    cfg = json.loads((CHERRY_TINY / "config.json").read_text())
    cfg.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, head_dim=16)
    mx.random.seed(seed)
    model = build_model(cfg)
    mx.eval(model.parameters())
    return save_model(model, path, cfg, CHERRY_TINY)
