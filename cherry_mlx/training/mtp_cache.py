"""A small cache of the trunk's own generations for training MTP heads without the trunk.

Each cached sequence is a prompt and the trunk's reply to it, with what a head step needs from
the trunk at every position t (so a head training step runs the heads only):

    tokens (L,)      prompt + reply
    hidden (L-1, D)  the trunk's final-norm state at t = 0..L-2, float16 (the last token is never
                     fed); float16 halves the bytes, and the heads are fed float32 copies
    greedy (L-1,)    the trunk's argmax next token at t (the distillation target)

Layout of a cache directory::

    manifest.json      {"version", "source" (model fingerprint), "settings", "shards": [...]}
    shard-00000.npz    tokens, hidden, greedy concatenated over sequences; ``offsets`` (n+1,)
                       into tokens (hidden/greedy of sequence i start at offsets[i] - i);
                       ``prompt_len`` (n,), ``prompt_id`` (n,) (index into the prompt list)

A shard is written to a temporary name and renamed, then the manifest is rewritten the same way,
so an interrupted build loses at most the shard in flight and ``build`` resumes from the prompts
no shard holds. The generator is passed in (``decoding.batch.batch_generate_states`` in
practice) so this module stays below decoding.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class CachedSeq:
    tokens: np.ndarray  # (L,) int32
    hidden: np.ndarray  # (L-1, D) float16
    greedy: np.ndarray  # (L-1,) int32
    prompt_len: int
    prompt_id: int


def source_fingerprint(model_dir: str | os.PathLike) -> str:
    """Config text + weight file sizes of a model directory: a cache built from other weights is
    refused instead of silently mixed."""
    d = Path(model_dir)
    h = hashlib.sha256()
    cfg = d / "config.json"
    if cfg.exists():
        h.update(cfg.read_bytes())
    for f in sorted(d.glob("*.safetensors")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def read_manifest(cache_dir: str | os.PathLike) -> Optional[Dict]:
    p = Path(cache_dir) / MANIFEST
    if not p.exists():
        return None
    m = json.loads(p.read_text())
    if m.get("version") != VERSION:
        raise ValueError(f"{p}: cache version {m.get('version')} != {VERSION}; rebuild it")
    return m


def write_shard(cache_dir: Path, index: int, seqs: Sequence[CachedSeq]) -> Dict:
    """Write one shard atomically; returns its manifest entry."""
    tokens = np.concatenate([s.tokens for s in seqs]).astype(np.int32)
    hidden = np.concatenate([s.hidden for s in seqs]).astype(np.float16)
    greedy = np.concatenate([s.greedy for s in seqs]).astype(np.int32)
    offsets = np.cumsum([0] + [len(s.tokens) for s in seqs]).astype(np.int64)
    for s in seqs:
        if s.hidden.shape[0] != len(s.tokens) - 1 or s.greedy.shape[0] != len(s.tokens) - 1:
            raise ValueError("a cached sequence needs L-1 states and greedy tokens for L tokens")
    name = f"shard-{index:05d}.npz"
    arrays = dict(
        tokens=tokens,
        hidden=hidden,
        greedy=greedy,
        offsets=offsets,
        prompt_len=np.array([s.prompt_len for s in seqs], np.int32),
        prompt_id=np.array([s.prompt_id for s in seqs], np.int64),
    )

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    _atomic_write(cache_dir / name, write)
    n_reply = int(sum(len(s.tokens) - s.prompt_len for s in seqs))
    return {"file": name, "sequences": len(seqs), "tokens": int(tokens.size), "reply": n_reply}


def read_shard(path: Path) -> List[CachedSeq]:
    z = np.load(path)
    off = z["offsets"]
    out = []
    for i in range(len(off) - 1):
        a, b = int(off[i]), int(off[i + 1])
        out.append(
            CachedSeq(
                tokens=z["tokens"][a:b],
                hidden=z["hidden"][a - i : b - i - 1],
                greedy=z["greedy"][a - i : b - i - 1],
                prompt_len=int(z["prompt_len"][i]),
                prompt_id=int(z["prompt_id"][i]),
            )
        )
    return out


def iter_cache(cache_dir: str | os.PathLike) -> Iterator[CachedSeq]:
    """Every cached sequence, shard by shard."""
    m = read_manifest(cache_dir)
    if m is None:
        raise ValueError(f"{cache_dir}: no {MANIFEST}; build the cache first")
    for s in m["shards"]:
        yield from read_shard(Path(cache_dir) / s["file"])


def build(
    cache_dir: str | os.PathLike,
    prompts: Sequence[Sequence[int]],
    generate: Callable[[List[Sequence[int]], int], list],
    source: str,
    settings: Dict,
    batch_size: int = 32,
    budget_s: Optional[float] = None,
    log: Callable[[str], None] = print,
) -> Dict:
    """Generate replies to ``prompts`` in batches (``generate(prompts, shard index)`` returns
    objects with tokens/hidden/greedy/prompt_len) and store one shard per batch. Resumes:
    prompts already in a shard are skipped; ``source`` and ``settings`` must match the existing
    manifest. Stops after ``budget_s`` seconds (the next call goes on). Returns the manifest."""
    d = Path(cache_dir)
    d.mkdir(parents=True, exist_ok=True)
    m = read_manifest(d)
    if m is None:
        m = {"version": VERSION, "source": source, "settings": settings, "shards": [],
             "seconds": 0.0}  # fmt: skip
    elif m["source"] != source or m["settings"] != settings:
        raise ValueError(
            f"{d}: cache built from another model or settings "
            f"({m['source']}, {m['settings']}); use another --cache or delete it"
        )
    done = set()
    for s in m["shards"]:
        done.update(int(i) for i in np.load(d / s["file"])["prompt_id"])
    todo = [i for i in range(len(prompts)) if i not in done]  # in the caller's order
    # similar lengths in one batch (less left padding), sorted within blocks of 4 batches so a
    # time budget still covers the caller's (e.g. shuffled) order
    blk = 4 * batch_size
    todo = [i for a in range(0, len(todo), blk) for i in sorted(todo[a : a + blk],
            key=lambda i: len(prompts[i]))]  # fmt: skip
    t_start = time.perf_counter()
    for j in range(0, len(todo), batch_size):
        if budget_s is not None and time.perf_counter() - t_start > budget_s:
            log(f"cache: time budget reached, {len(todo) - j} prompts left (rerun to go on)")
            break
        ids = todo[j : j + batch_size]
        t0 = time.perf_counter()
        gens = generate([prompts[i] for i in ids], len(m["shards"]))
        seqs = [
            CachedSeq(g.tokens, g.hidden, g.greedy, int(g.prompt_len), int(i))
            for g, i in zip(gens, ids)
        ]
        entry = write_shard(d, len(m["shards"]), seqs)
        dt = time.perf_counter() - t0
        entry["seconds"] = round(dt, 2)
        m["shards"].append(entry)
        m["seconds"] = round(m["seconds"] + dt, 2)
        _atomic_write(d / MANIFEST, lambda p: p.write_text(json.dumps(m, indent=1)))
        n = sum(s["sequences"] for s in m["shards"])
        tok = sum(s["reply"] for s in m["shards"])
        log(
            f"cache: shard {entry['file']}: {entry['reply']} reply tokens in {dt:.1f} s "
            f"({entry['reply'] / dt:.0f} tok/s); total {n} sequences, {tok} reply tokens"
        )
    return m


def summary(cache_dir: str | os.PathLike) -> Dict:
    m = read_manifest(cache_dir) or {"shards": [], "seconds": 0.0}
    return {
        "sequences": sum(s["sequences"] for s in m["shards"]),
        "tokens": sum(s["tokens"] for s in m["shards"]),
        "reply_tokens": sum(s["reply"] for s in m["shards"]),
        "generation_s": m.get("seconds", 0.0),
    }
