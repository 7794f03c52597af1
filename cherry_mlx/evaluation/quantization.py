"""What quantisation costs, measured: held-out loss, prefill and decode speed, and the batches
they (and calibration) read. The ``quantize`` command itself is ``pipelines/quantize.py``."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import mlx.core as mx
import mlx.nn as nn

from cherry_mlx.data.jsonl import read_jsonl
from cherry_mlx.data.paths import PROSE_DIR
from cherry_mlx.decoding.generate import decode_step, prefill
from cherry_mlx.models.loading import load_tokenizer
from cherry_mlx.selection.losses import per_token_ce
from cherry_mlx.training.data import default_data_dir, load_split, valid_batches


def heldout_loss(model, batches) -> Tuple[float, int]:
    """Mean response-token cross-entropy over batches (the losses.py batch contract)."""
    tot, n = 0.0, 0.0
    for b in batches:
        ce = per_token_ce(model(b["inputs"]), b["targets"])
        resp = b["response"].astype(mx.float32)
        tot += (ce * resp).sum().item()
        n += resp.sum().item()
    return tot / max(n, 1.0), int(n)


def speed(model, prompt_len: int = 256, decode: int = 32) -> Dict[str, float]:
    """Prefill and greedy-decode throughput (tokens/s) with a KV cache, after one warm-up."""
    toks = mx.arange(prompt_len) % model.args.vocab_size
    out = {}
    for _ in range(2):  # the first pass warms up kernels and allocations
        cache = model.make_cache()
        t0 = time.perf_counter()
        h = prefill(model, toks, cache)
        mx.eval(h)
        t1 = time.perf_counter()
        tok = mx.argmax(model.logits(h[:, -1, :]), axis=-1)
        for _ in range(decode):
            tok = mx.argmax(decode_step(model, tok, cache), axis=-1)
            mx.eval(tok)
        t2 = time.perf_counter()
        out = {"prefill": prompt_len / (t1 - t0), "decode": decode / (t2 - t1)}
    return out


def calibration_batches(
    model_name: str,
    data: Optional[str] = None,
    samples: int = 32,
    batch_size: int = 4,
    max_len: int = 256,
) -> list:
    """Token batches (B, max_len) for GPTQ, AWQ and ``--keep auto``: ``samples`` windows of the
    examples of ``data`` (a JSONL file or a data dir's train.jsonl; default the bundled train
    split) packed end to end, so no padding token skews the activation statistics."""
    path = Path(data) if data else default_data_dir() / "train.jsonl"
    if path.is_dir():
        path = path / "train.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass --calib-data with a JSONL file or a dir")
    encoded, _, _ = load_split(path, load_tokenizer(model_name), max_len)
    stream, need = [], samples * max_len
    for e in encoded:
        stream.extend(int(t) for t in e.tokens)
        if len(stream) >= need:
            break
    n = len(stream) // max_len
    if n == 0:
        raise ValueError(f"{path}: fewer than {max_len} tokens; pass more calibration data")
    rows = mx.array(stream[: n * max_len], dtype=mx.int32).reshape(n, max_len)
    return [rows[i : i + batch_size] for i in range(0, n, batch_size)]


def heldout_batches(
    model_name: str,
    data: Optional[str] = None,
    max_batches: int = 8,
    batch_size: int = 8,
    max_len: int = 256,
) -> Optional[list]:
    """Batches of a held-out split for the loss comparison: ``data`` is a JSONL file or a data
    directory (its valid.jsonl); default the bundled data's valid split, None if absent."""
    path = Path(data) if data else default_data_dir() / "valid.jsonl"
    if path.is_dir():
        path = path / "valid.jsonl"
    if not path.is_file():
        if data:
            raise FileNotFoundError(f"{path} not found: pass a JSONL file or a data directory")
        return None
    encoded, _, _ = load_split(path, load_tokenizer(model_name), max_len)
    return valid_batches(encoded, batch_size, max_len)[:max_batches]


def prose_windows(model_name: str, path: Optional[str] = None, n: int = 8, length: int = 257):
    """``n`` windows (n, length) of a ``{"text"}`` JSONL file's documents joined end to end
    (EOS between them); default the bundled held-out English prose. None when absent."""
    p = Path(path) if path else Path(PROSE_DIR) / "en.valid.jsonl"
    if not p.is_file():
        if path:
            raise FileNotFoundError(f'{p} not found: pass a JSONL file of {{"text": ...}} lines')
        return None
    tok = load_tokenizer(model_name)
    ids: list = []
    for i, ex in enumerate(read_jsonl(p)):
        if "text" not in ex:
            raise ValueError(f'{p}:{i + 1}: no "text" field; prose files hold {{"text": ...}}')
        ids += tok.encode(ex["text"]) + [tok.eos_token_id]
        if len(ids) >= n * length:
            break
    n = min(n, len(ids) // length)
    if n == 0:
        raise ValueError(f"{p}: fewer than {length} tokens of prose")
    return mx.array(ids[: n * length], dtype=mx.int32).reshape(n, length)


def prose_perplexity(model, windows: mx.array, batch_size: int = 4) -> float:
    """Perplexity over every next-token prediction of ``windows`` (n, T)."""
    tot, cnt = 0.0, 0
    for i in range(0, windows.shape[0], batch_size):
        w = windows[i : i + batch_size]
        logits = model(w[:, :-1]).astype(mx.float32)
        tot += nn.losses.cross_entropy(logits, w[:, 1:]).sum().item()
        cnt += w[:, 1:].size
    return math.exp(min(tot / cnt, 700.0))  # a broken model's loss must not overflow exp
