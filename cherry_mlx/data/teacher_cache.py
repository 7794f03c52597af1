"""Teacher cache: a source model's own signal stored once, reused by every healing run.

Compressing, quantising or adding MTP heads to a pretrained model all heal best from the source
model itself (its next-token distribution, its hidden states), not from ground-truth text alone.
Running the source over the same text for every arm and every step is the expensive part on a
CPU, so ``cherry-mlx teacher build`` runs it once and writes what the students need here. One
cache serves every user: compression healing (top-k logits, hidden states at every layer),
quantisation (top-k logits) and MTP heads (the last layer's state and the greedy token
``topk_idx[..., 0]``, best on the model's own replies: ``--origin generate``).

On disk (one directory)::

    manifest.json          format, source fingerprint, text origin, sampling settings, k, shards
    shard-00000/           one directory per shard, renamed into place when complete
        inputs.npy         (N, T) int32   token ids fed to the teacher
        length.npy         (N,) int32     real positions per row (the rest is padding)
        targets.npy        (N, T) int32   next token ids (0 where nothing follows)
        response.npy       (N, T) bool    positions a student is supervised on
        level.npy          (N, T) int8    GT level per position (0: not GT / untagged)
        topk_idx.npy       (N, T, k)      uint16 when the vocabulary fits, else int32
        topk_val.npy       (N, T, k) f16  the teacher's raw logits at those ids, descending
        lse.npy            (N, T) f32     log-sum-exp of the full logit row
        hidden-L.npy       (N, T, D) f16  residual stream entering block L (L = depth: after the
                                          last block, before the final norm), for chosen L

``topk_val - lse`` are exact full-vocabulary log-probabilities, so the probability mass outside
the top k, ``1 - sum(exp(topk_val - lse))``, is known and a loss can either renormalise over the
k ids or keep the tail as one extra bucket (``training.topk_kd``).

Atomicity and resume: a shard is written into ``shard-NNNNN.tmp-PID`` and renamed; the manifest
lists a shard only after its rename (written to a temporary file and renamed too). A killed build
leaves at most a stale ``.tmp-`` directory, removed on resume; finished shards are kept and the
builder continues with the first missing index (shard contents are a deterministic function of
the index and the settings, which the manifest pins).

Reader API (no MLX; numpy arrays, memory-mapped)::

    cache = TeacherCache.open(path, fingerprint=model_fingerprint(model_dir))  # one-line errors
    cache.k, cache.seq_len, cache.vocab_size, cache.hidden_layers, cache.rows, cache.tokens
    cache.row_batch([3, 7, 9])            # dict of (B, T, ...) arrays, one key per file above
    for batch in cache.batches(8, seed=0, epochs=None):  # shuffled rows, endless when None
        ...

Writer API (used by the builder; any producer can fill a cache)::

    w = CacheWriter(path, settings, fingerprint)   # creates, or resumes when settings match
    w.has(i); w.write(i, arrays); w.shards_done
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

FORMAT = "cherry-teacher-cache/2"
OLD_FORMAT = "cherry-teacher-cache/1"  # read: no length.npy, derived from the response mask
ROW_KEYS = (
    "inputs", "length", "targets", "response", "level", "topk_idx", "topk_val", "lse",
)  # fmt: skip
# the settings a resumed build must share with the cache it continues
PINNED = ("origin", "source", "k", "seq_len", "rows_per_shard", "hidden_layers", "sampling")


class CacheError(ValueError):
    """A cache that cannot be used as asked: always one line naming the path and the fix."""


def model_fingerprint(model_dir: str | os.PathLike) -> str:
    """sha256 over config.json and every ``*.safetensors`` file of a model directory (what a
    cache was computed from; a cache from another model is refused)."""
    d = Path(model_dir)
    files = [d / "config.json"] + sorted(d.glob("*.safetensors"))
    h = hashlib.sha256()
    for f in files:
        if not f.is_file():
            raise CacheError(f"{f} not found: the teacher must be a model directory")
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def index_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 65536 else np.int32


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}"


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def dir_bytes(path: str | os.PathLike) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


class CacheWriter:
    """Writes shards atomically; ``settings`` holds the ``PINNED`` keys (and anything else worth
    recording: the text's description, the tokenizer, the dtype)."""

    def __init__(self, path: str | os.PathLike, settings: Dict[str, Any], fingerprint: str):
        self.path = Path(path)
        missing = [k for k in PINNED if k not in settings]
        if missing:
            raise CacheError(f"teacher cache settings lack {missing}")
        manifest_file = self.path / "manifest.json"
        if manifest_file.exists():
            old = _read_manifest(self.path)
            if old.get("fingerprint") != fingerprint:
                raise CacheError(
                    f"{self.path} holds a cache of another source model (fingerprint "
                    f"{old.get('fingerprint')} vs {fingerprint}); pick a new output directory"
                )
            diff = [k for k in PINNED if old.get(k) != settings[k]]
            if diff:
                raise CacheError(
                    f"{self.path} was built with other settings ({', '.join(diff)}); resume "
                    f"with the same options or pick a new output directory"
                )
            self.manifest = old
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self.manifest = {"format": FORMAT, "fingerprint": fingerprint, **settings}
            self.manifest["shards"] = []
            _write_json(manifest_file, self.manifest)
        for stale in self.path.glob("shard-*.tmp-*"):  # a killed writer's partial shard
            shutil.rmtree(stale, ignore_errors=True)

    @property
    def shards_done(self) -> List[int]:
        return [s["index"] for s in self.manifest["shards"]]

    def has(self, i: int) -> bool:
        return i in self.shards_done and (self.path / _shard_name(i)).is_dir()

    def write(self, i: int, arrays: Dict[str, np.ndarray], extra: Optional[dict] = None) -> None:
        """Store shard ``i`` (every ``ROW_KEYS`` array plus optional ``hidden-L``)."""
        missing = [k for k in ROW_KEYS if k not in arrays]
        if missing:
            raise CacheError(f"shard {i} lacks {missing}")
        final = self.path / _shard_name(i)
        tmp = self.path / f"{_shard_name(i)}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr))
        if final.exists():  # listed nowhere (killed between rename and manifest): redo it
            shutil.rmtree(final)
        os.replace(tmp, final)
        rows = int(arrays["inputs"].shape[0])
        tokens = int(np.asarray(arrays["response"]).sum())
        self.manifest["shards"] = [s for s in self.manifest["shards"] if s["index"] != i]
        self.manifest["shards"].append(
            {"index": i, "rows": rows, "tokens": tokens, **(extra or {})}
        )
        self.manifest["shards"].sort(key=lambda s: s["index"])
        _write_json(self.path / "manifest.json", self.manifest)


def _read_manifest(path: Path) -> Dict[str, Any]:
    f = path / "manifest.json"
    if not f.is_file():
        raise CacheError(f"{path} is not a teacher cache (no manifest.json); build one with "
                         f"`cherry-mlx teacher build`")  # fmt: skip
    try:
        m = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CacheError(f"{f} is corrupted ({e.__class__.__name__}); rebuild the cache") from None
    if not isinstance(m, dict) or m.get("format") not in (FORMAT, OLD_FORMAT):
        raise CacheError(f"{f} is not a {FORMAT} manifest; rebuild the cache")
    return m


class TeacherCache:
    """Read side of the cache: validated at open, rows loaded lazily (memory-mapped)."""

    def __init__(self, path: Path, manifest: Dict[str, Any]):
        self.path, self.manifest = path, manifest
        self.k = int(manifest["k"])
        self.seq_len = int(manifest["seq_len"])
        self.vocab_size = int(manifest["vocab_size"])
        self.hidden_layers = [int(x) for x in manifest["hidden_layers"]]
        self._shards = [s["index"] for s in manifest["shards"]]
        self._rows = [int(s["rows"]) for s in manifest["shards"]]
        self._starts = np.cumsum([0] + self._rows)
        self._open: Dict[int, Dict[str, np.ndarray]] = {}

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        fingerprint: Optional[str] = None,
        need_hidden=(),
        purpose: str = "",
    ) -> "TeacherCache":
        """Open and check a cache; ``fingerprint`` (``model_fingerprint`` of the source the
        student came from) refuses a cache of another model, ``need_hidden`` missing layers;
        ``purpose`` (e.g. "MTP heads") is named in those errors."""
        why = f" ({purpose})" if purpose else ""
        path = Path(path)
        if not path.is_dir():
            raise CacheError(f"teacher cache {path} not found; build it with "
                             f"`cherry-mlx teacher build MODEL -o {path}`")  # fmt: skip
        m = _read_manifest(path)
        if fingerprint is not None and m.get("fingerprint") != fingerprint:
            raise CacheError(
                f"teacher cache {path} was built from another source model (fingerprint "
                f"{m.get('fingerprint')}, this model {fingerprint}){why}; rebuild it from this "
                f"model with `cherry-mlx teacher build`"
            )
        if not m.get("shards"):
            raise CacheError(f"teacher cache {path} has no finished shard; run the build again")
        cache = cls(path, m)
        lacking = sorted(set(int(x) for x in need_hidden) - set(cache.hidden_layers))
        if lacking:
            raise CacheError(
                f"teacher cache {path} has hidden states at layers {cache.hidden_layers}, not "
                f"{lacking}{why}; rebuild it with --hidden-layers including them ('last' for "
                f"the final layer, 'all' for every one)"
            )
        cache._load(0)  # shapes of the first shard checked now, the rest when first read
        return cache

    @property
    def rows(self) -> int:
        return int(self._starts[-1])

    @property
    def tokens(self) -> int:
        return sum(int(s["tokens"]) for s in self.manifest["shards"])

    def lengths(self) -> np.ndarray:
        """(rows,) real positions per row, all shards."""
        return np.concatenate(
            [np.asarray(self._load(j)["length"]) for j in range(len(self._shards))]
        )

    def _load(self, j: int) -> Dict[str, np.ndarray]:
        if j in self._open:
            return self._open[j]
        d = self.path / _shard_name(self._shards[j])
        names = list(ROW_KEYS) + [f"hidden-{layer}" for layer in self.hidden_layers]
        arrays = {}
        for name in names:
            f = d / f"{name}.npy"
            if name == "length" and not f.exists() and self.manifest["format"] == OLD_FORMAT:
                continue
            try:
                arrays[name] = np.load(f, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise CacheError(f"{f} is missing or corrupted ({e.__class__.__name__}); "
                                 f"rebuild the cache") from None  # fmt: skip
        n, t = self._rows[j], self.seq_len
        if "length" not in arrays:  # an old cache: up to the last supervised position
            resp = np.asarray(arrays["response"])  # (n, t)
            last = t - np.argmax(resp[:, ::-1], axis=1)
            arrays["length"] = np.where(resp.any(axis=1), last, t).astype(np.int32)
        want = {"topk_idx": (n, t, self.k), "topk_val": (n, t, self.k), "length": (n,)}
        for name, arr in arrays.items():
            shape = want.get(name, arr.shape if name.startswith("hidden-") else (n, t))
            lead = (n,) if name == "length" else (n, t)
            if arr.shape[:3] != shape[:3] or arr.shape[: len(lead)] != lead:
                raise CacheError(
                    f"{d / name}.npy has shape {arr.shape}, the manifest says {shape}; the cache "
                    f"is corrupted, rebuild it"
                )
        self._open[j] = arrays
        return arrays

    def row_batch(self, rows: Sequence[int], keys: Optional[Sequence[str]] = None):
        """Rows (global indices) as a dict of stacked numpy arrays (B, T, ...)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.rows):
            raise IndexError(f"row index out of range 0..{self.rows - 1}")
        shard = np.searchsorted(self._starts, rows, side="right") - 1
        out: Dict[str, List[np.ndarray]] = {}
        for r, j in zip(rows, shard):
            arrays = self._load(int(j))
            local = int(r - self._starts[j])
            for name, arr in arrays.items():
                if keys is None or name in keys:
                    out.setdefault(name, []).append(np.asarray(arr[local]))
        return {name: np.stack(v) for name, v in out.items()}

    def batches(
        self, batch_size: int, seed: int = 0, epochs: Optional[int] = 1, keys=None, rows=None
    ) -> Iterator[Dict[str, np.ndarray]]:
        """Shuffled batches of whole rows (each epoch a new permutation); ``epochs=None`` is
        endless; ``rows`` restricts to a subset (e.g. a calibration split)."""
        pool = np.arange(self.rows) if rows is None else np.asarray(rows)
        if len(pool) < batch_size:
            raise CacheError(
                f"teacher cache {self.path} has {len(pool)} rows, fewer than a batch of "
                f"{batch_size}; build more shards or lower the batch size"
            )
        rng = np.random.default_rng(seed)
        epoch = 0
        while epochs is None or epoch < epochs:
            order = rng.permutation(pool)
            for s in range(0, len(order) - batch_size + 1, batch_size):
                yield self.row_batch(order[s : s + batch_size], keys)
            epoch += 1
