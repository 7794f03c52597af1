"""``cherry-mlx teacher build``: run a source model over text and fill a teacher cache.

The format, its reader and its writer are ``data.teacher_cache`` (no MLX, nothing of ours); this
module is the part that runs a model. Two text origins:

- ``text``: teacher-forced over existing text. ``{text}`` rows (and the bundled prose) are
  tokenised, joined with EOS and cut into windows of ``seq_len + 1`` tokens, every position
  supervised; chat rows (``{messages}``/``{prompt, completion}``, a data dir's train split) go
  through the project's encoder, so only response positions are supervised and GT levels come
  along (SGT weighting applies to distillation too).
- ``generate``: the source's *own* answers. Prompts (a row's ``prompt`` or first user message,
  in the model's chat template) are answered by mlx-lm's ``batch_generate`` with the given
  temperature / top-p, then the prompt + answer is teacher-forced like text; only the generated
  positions are supervised. Shard i samples with seed + i, so a resumed build writes what the
  killed one would have. A caller with its own prompt ids (``repro``'s MTP stage) passes them
  to ``build_cache`` instead of ``--data``.

MTP heads read the last layer's state (``--hidden-layers last``) and the greedy token
``topk_idx[..., 0]``; quantisation and compression healing read the top-k logits.

Rows are assigned to shards by index (``rows_per_shard``), which is what makes resume exact.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence

import mlx.core as mx
import numpy as np

from cherry_mlx._io import iter_lines, loads_json
from cherry_mlx.data.encode import encode_dataset
from cherry_mlx.data.jsonl import iter_jsonl
from cherry_mlx.data.paths import PROSE_DIR
from cherry_mlx.data.teacher_cache import (
    CacheWriter,
    dir_bytes,
    index_dtype,
    model_fingerprint,
)
from cherry_mlx.models.loading import load_model, load_tokenizer, resolve
from cherry_mlx.training.teacher_config import TeacherConfig, parse_layers, sampling_of

LOGIT_BUDGET = 256 << 20  # bytes of float32 logits per teacher forward


def teacher_forward(model, inputs: mx.array, k: int, layers: Sequence[int] = ()):
    """Top-k logits, log-sum-exp and chosen residual streams of one batch.

    (B, T) -> topk_idx (B, T, k) int32, topk_val (B, T, k) f32 (descending), lse (B, T) f32,
    {L: (B, T, D) f16} for L in ``layers`` (L = block index entering, depth = after the last).
    """
    m = model.model
    h = m.embed(inputs)  # (B, T, D)
    masks = m.layer_masks(h)
    hidden = {}
    for step, idx in enumerate(m.schedule):
        if step in layers:
            hidden[step] = h.astype(mx.float16)
        h = m.layers[idx](h, masks[idx])
    if len(m.schedule) in layers:
        hidden[len(m.schedule)] = h.astype(mx.float16)
    logits = model.logits(m.norm(h)).astype(mx.float32)  # (B, T, V)
    lse = mx.logsumexp(logits, axis=-1)
    part = mx.argpartition(-logits, k - 1, axis=-1)[..., :k]  # (B, T, k), unordered
    vals = mx.take_along_axis(logits, part, axis=-1)
    order = mx.argsort(-vals, axis=-1)
    idx = mx.take_along_axis(part, order, axis=-1)
    vals = mx.take_along_axis(vals, order, axis=-1)
    return idx, vals, lse, hidden


# --- text -> rows ---------------------------------------------------------------------------


def _source_rows(spec: str, prompts_only: bool = False) -> List[dict]:
    """JSONL rows of ``--data`` (bundled prose name, data dir or file). ``prompts_only``: rows
    are only read for their prompts, so ``{"prompt"}`` alone is a valid row."""
    if spec in ("prose-en", "prose-ko"):
        path = Path(PROSE_DIR) / f"{spec[6:]}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `cherry-mlx data build`")
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            path = path / "train.jsonl"
        if not path.is_file():
            raise FileNotFoundError(
                f"--data {spec}: {path} not found; pass prose-en, a data dir or a .jsonl file"
            )
    if prompts_only:
        rows = []
        for lineno, line in iter_lines(path, "--data"):
            if line.strip():
                row = loads_json(line, f"{path}:{lineno}")
                if not isinstance(row, dict):
                    raise ValueError(f'{path}:{lineno}: not a JSON object; write {{"prompt": ...}}')
                rows.append(row)
    else:
        rows = list(iter_jsonl(path))
    if not rows:
        raise ValueError(f"--data {spec}: {path} has no rows")
    return rows


def _empty(n: int, t: int) -> Dict[str, np.ndarray]:
    return {
        "inputs": np.zeros((n, t), np.int32),
        "length": np.zeros((n,), np.int32),
        "targets": np.zeros((n, t), np.int32),
        "response": np.zeros((n, t), bool),
        "level": np.zeros((n, t), np.int8),
    }


def text_rows(rows: List[dict], tokenizer, seq_len: int) -> Dict[str, np.ndarray]:
    """Fixed-length rows (N, seq_len) from ``{text}`` rows (packed) and chat rows (one each)."""
    plain = [r["text"] for r in rows if "text" in r]
    chat = [r for r in rows if "text" not in r]
    parts = []
    if plain:
        eos = tokenizer.eos_token_id or 0
        stream = []
        for text in plain:
            stream += list(tokenizer.encode(text, add_special_tokens=False)) + [eos]
        n = len(stream) // (seq_len + 1)
        if n:
            win = np.asarray(stream[: n * (seq_len + 1)], np.int32).reshape(n, seq_len + 1)
            out = _empty(n, seq_len)
            out["inputs"], out["targets"] = win[:, :-1], win[:, 1:]
            out["response"][:] = True
            out["length"][:] = seq_len
            parts.append(out)
    if chat:
        encoded, _ = encode_dataset(chat, tokenizer, seq_len)
        out = _empty(len(encoded), seq_len)
        for i, e in enumerate(encoded):
            n = len(e.tokens) - 1
            out["inputs"][i, :n], out["targets"][i, :n] = e.tokens[:-1], e.tokens[1:]
            out["response"][i, :n] = e.response[1:]
            out["level"][i, :n] = e.level[1:]
            out["length"][i] = n
        parts.append(out)
    if not parts:
        raise ValueError(f"the text is shorter than one row of {seq_len + 1} tokens")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def window_rows(windows: np.ndarray, seq_len: int) -> Dict[str, np.ndarray]:
    """Rows from ready token windows (N, seq_len + 1), every position supervised."""
    if windows.ndim != 2 or windows.shape[1] != seq_len + 1:
        raise ValueError(f"token windows of shape {windows.shape}: need (N, {seq_len + 1})")
    out = _empty(len(windows), seq_len)
    out["inputs"], out["targets"] = windows[:, :-1], windows[:, 1:]
    out["response"][:], out["length"][:] = True, seq_len
    return out


def prompts_of(rows: List[dict], tokenizer) -> List[List[int]]:
    """Chat-templated prompt ids: a row's ``prompt``, first user message, or its text."""
    out = []
    for r in rows:
        if "prompt" in r:
            text = r["prompt"]
        elif "messages" in r:
            text = next((m["content"] for m in r["messages"] if m.get("role") == "user"), None)
        else:
            text = r.get("text", "")[:400]
        if text:
            msgs = [{"role": "user", "content": text}]
            out.append(list(tokenizer.apply_chat_template(msgs, add_generation_prompt=True)))
    if not out:
        raise ValueError("--origin generate found no prompts in --data")
    return out


def generated_rows(model, tokenizer, prompts, cfg: TeacherConfig, seed: int):
    """Sample answers with mlx-lm's batched generation; rows of prompt + answer."""
    from mlx_lm.generate import batch_generate
    from mlx_lm.sample_utils import make_sampler

    mx.random.seed(seed)
    sampler = make_sampler(temp=cfg.temperature, top_p=cfg.top_p)
    # batch_generate stops at the tokenizer's EOS ids; without them a reply runs to the limit
    stops = tokenizer if cfg.stop_at_eos else SimpleNamespace(eos_token_ids=[],
                                                              decode=tokenizer.decode)  # fmt: skip
    out = _empty(len(prompts), cfg.seq_len)
    for s in range(0, len(prompts), cfg.batch_size):
        chunk = prompts[s : s + cfg.batch_size]
        res = batch_generate(model, stops, chunk, max_tokens=cfg.max_new_tokens,
                             sampler=sampler, return_token_ids=True)  # fmt: skip
        for j, (p, gen) in enumerate(zip(chunk, res.token_ids)):
            seq = (list(p) + list(gen))[: cfg.seq_len + 1]
            n, i = len(seq) - 1, s + j
            out["inputs"][i, :n], out["targets"][i, :n] = seq[:-1], seq[1:]
            out["response"][i, max(len(p) - 1, 0) : n] = True
            out["length"][i] = n
    return out


# --- the command ----------------------------------------------------------------------------


def build_cache(
    cfg: TeacherConfig,
    log=print,
    prompts: Optional[List[List[int]]] = None,
    tokenizer=None,
    windows: Optional[np.ndarray] = None,
) -> Path:
    """Fill ``cfg.out`` shard by shard (skipping finished ones); returns the cache path.
    ``prompts`` (token ids, origin ``generate``) replace the prompts of ``cfg.data``, ``windows``
    (N, seq_len + 1) token ids (origin ``text``, every position supervised) its text;
    ``tokenizer`` the model directory's own (for a source saved without one)."""
    if (prompts is not None and cfg.origin != "generate") or (
        windows is not None and cfg.origin != "text"
    ):
        raise ValueError("prompt ids need origin 'generate', token windows origin 'text'")
    model_dir = resolve(cfg.model)
    model, config = load_model(model_dir)
    model.eval()
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model_dir)
    depth = len(model.model.schedule)
    layers = parse_layers(cfg.hidden_layers, depth)
    vocab = int(config["vocab_size"])
    if cfg.k > vocab:
        raise ValueError(f"--k {cfg.k} exceeds the vocabulary ({vocab})")
    settings = {
        "origin": cfg.origin, "source": str(model_dir), "k": cfg.k, "seq_len": cfg.seq_len,
        "rows_per_shard": cfg.rows_per_shard, "hidden_layers": layers,
        "sampling": sampling_of(cfg), "text": cfg.data, "vocab_size": vocab,
        "hidden_size": int(config["hidden_size"]), "max_rows": cfg.max_rows,
        "index_dtype": np.dtype(index_dtype(vocab)).name, "value_dtype": "float16",
    }  # fmt: skip
    log(f"fingerprinting {model_dir} ...")
    writer = CacheWriter(cfg.out, settings, model_fingerprint(model_dir))
    R = cfg.rows_per_shard
    if cfg.origin == "text":
        if windows is not None:
            table = window_rows(np.asarray(windows, np.int32), cfg.seq_len)
        else:
            table = text_rows(_source_rows(cfg.data), tokenizer, cfg.seq_len)
        total = len(table["inputs"])
    else:
        if prompts is None:
            prompts = prompts_of(_source_rows(cfg.data, prompts_only=True), tokenizer)
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("--origin generate needs prompts of at least one token")
        total = len(prompts)
    total = min(total, cfg.max_rows) if cfg.max_rows else total
    n_shards = -(-total // R)
    done_before = len([i for i in range(n_shards) if writer.has(i)])
    if done_before:
        log(f"resuming: {done_before} of {n_shards} shards already in {cfg.out}")
    t0, toks = time.perf_counter(), 0
    for i in range(n_shards):
        if writer.has(i):
            continue
        lo, hi = i * R, min((i + 1) * R, total)
        t_shard = time.perf_counter()
        if cfg.origin == "text":
            shard = {k: v[lo:hi] for k, v in table.items()}
        else:
            shard = generated_rows(model, tokenizer, prompts[lo:hi], cfg, cfg.seed + i)
        arrays = _teacher_shard(model, shard, cfg, layers, vocab)
        writer.write(i, arrays, {"seconds": round(time.perf_counter() - t_shard, 2)})
        toks += int(shard["response"].sum())
        rate = toks / max(time.perf_counter() - t0, 1e-9)
        log(f"shard {i + 1}/{n_shards}: {hi} rows, {toks} tokens this run, {rate:.0f} tok/s, "
            f"{dir_bytes(cfg.out) / 2**20:.1f} MiB on disk")  # fmt: skip
    log(f"teacher cache {cfg.out}: {total} rows, k={cfg.k}, hidden layers {layers or 'none'}, "
        f"{dir_bytes(cfg.out) / 2**20:.1f} MiB")  # fmt: skip
    return Path(cfg.out)


def _teacher_shard(model, shard, cfg: TeacherConfig, layers, vocab: int):
    parts: Dict[str, List[np.ndarray]] = {}
    # rows per forward: at most cfg.batch_size, and a full-vocabulary logit block of <= 256 MiB
    step = max(1, min(cfg.batch_size, LOGIT_BUDGET // (4 * cfg.seq_len * vocab)))
    for s in range(0, len(shard["inputs"]), step):
        x = mx.array(shard["inputs"][s : s + step])
        idx, val, lse, hidden = teacher_forward(model, x, cfg.k, layers)
        mx.eval(idx, val, lse, *hidden.values())
        got = {"topk_idx": np.array(idx).astype(index_dtype(vocab)),
               "topk_val": np.array(val).astype(np.float16), "lse": np.array(lse)}  # fmt: skip
        for layer, h in hidden.items():
            got[f"hidden-{layer}"] = np.array(h)
        for k, v in got.items():
            parts.setdefault(k, []).append(v)
    return {**shard, **{k: np.concatenate(v) for k, v in parts.items()}}


def teacher_command(cfg: TeacherConfig, log=print) -> Path:
    return build_cache(cfg, log=log)
