"""Training the Cabstractor on precomputed features (``cherry-mlx cabstractor train``).

The extractors are frozen, so their outputs are computed once, outside this project, and stored
per example; training then never runs an extractor. A features directory holds::

    texts.jsonl            {"id": "ex0", "prompt": "What is shown?", "text": "a cat"} per line
    ex0.safetensors        one array per stream, (T, F) or (F,); streams in sorted key order
    ex1.npy                or a single stream as .npy

``prompt`` (optional) is read but not supervised; the loss is next-token cross-entropy on
``text``, averaged over its tokens, with gradients for the Cabstractor only (the LM is frozen).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

from cherry_mlx.fusion.cabstractor import Cabstractor, CabstractorConfig, text_logits
from cherry_mlx.fusion.config import CabTrainConfig
from cherry_mlx.models.loading import load_model, load_tokenizer, resolve
from cherry_mlx.models.outputs import check_output, make_tmp_dir, replace_dir
from cherry_mlx.models.runs import RUNS_DIR


@dataclass
class FeatureExample:
    features: List[np.ndarray]  # one (T_i, F_i) array per stream
    prompt: List[int]
    target: List[int]


def read_features(path: Path) -> List[np.ndarray]:
    """One example's streams: a .npy (one stream) or a .safetensors (sorted keys), each checked
    to be a finite, non-empty (T, F) or (F,) array so a bad file is named before training."""
    try:
        if path.suffix == ".npy":
            arrays = [np.load(path, allow_pickle=False)]
        else:
            loaded = mx.load(str(path))
            arrays = [np.array(loaded[k].astype(mx.float32)) for k in sorted(loaded)]
    except (ValueError, OSError, RuntimeError, EOFError) as err:
        first = (str(err).splitlines() or [type(err).__name__])[0]
        first = "object data, not numbers" if "pickled" in first else first
        raise ValueError(f"{path}: not a readable feature array ({first})") from None
    if not arrays:
        raise ValueError(f"{path}: holds no arrays")
    out = []
    for a in arrays:
        if a.dtype.kind not in "fiub":
            raise ValueError(f"{path}: features must be numbers, not {a.dtype}")
        a = a[None] if a.ndim == 1 else a  # (T, F)
        if a.ndim != 2 or 0 in a.shape:
            raise ValueError(
                f"{path}: a stream has shape {a.shape}; each needs (T, F) or (F,) with T, F >= 1"
            )
        if not np.isfinite(a).all():
            raise ValueError(f"{path}: features hold NaN or inf; fix the extractor's output")
        out.append(a.astype(np.float32))
    return out


def load_feature_examples(features_dir: str, encode: Callable[[str], List[int]]):
    """Examples of a features directory; ``encode`` turns text into token ids."""
    root = Path(features_dir)
    jsonl = root / "texts.jsonl"
    if not jsonl.is_file():
        raise FileNotFoundError(
            f"{jsonl} is missing: a features dir needs texts.jsonl with one "
            '{"id": ..., "text": ...} per line beside <id>.npy or <id>.safetensors files'
        )
    out = []
    for n, line in enumerate(jsonl.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{jsonl}:{n}: not JSON ({err.msg})") from None
        if not isinstance(row, dict) or "id" not in row or "text" not in row:
            raise ValueError(f"{jsonl}:{n}: needs fields id and text (prompt optional)")
        found = [root / f"{row['id']}{ext}" for ext in (".safetensors", ".npy")]
        found = [p for p in found if p.is_file()]
        if not found:
            raise FileNotFoundError(f"{jsonl}:{n}: no {row['id']}.npy or .safetensors in {root}")
        target = encode(row["text"])
        if not target:
            raise ValueError(f"{jsonl}:{n}: text is empty after tokenising")
        out.append(FeatureExample(read_features(found[0]), encode(row.get("prompt", "")), target))
    if not out:
        raise ValueError(f"{jsonl} has no examples")
    widths = [[a.shape[-1] for a in ex.features] for ex in out]
    if any(w != widths[0] for w in widths):
        raise ValueError(f"{root}: every example needs the same streams and widths ({widths[0]})")
    return out


def collate(examples: Sequence[FeatureExample]):
    """Pad streams (with masks) and token ids; ``weight`` marks the supervised text tokens."""
    feats, masks = [], []
    for i in range(len(examples[0].features)):
        arrays = [ex.features[i] for ex in examples]
        t = max(a.shape[0] for a in arrays)
        x = np.zeros((len(arrays), t, arrays[0].shape[-1]), np.float32)  # (B, T, F)
        m = np.zeros((len(arrays), t), bool)
        for b, a in enumerate(arrays):
            x[b, : a.shape[0]], m[b, : a.shape[0]] = a, True
        feats.append(mx.array(x))
        masks.append(None if m.all() else mx.array(m))
    seqs = [ex.prompt + ex.target for ex in examples]
    length = max(len(s) for s in seqs)
    ids = np.zeros((len(seqs), length), np.int32)
    weight = np.zeros((len(seqs), length), np.float32)
    for b, (ex, s) in enumerate(zip(examples, seqs)):
        ids[b, : len(s)] = s
        weight[b, len(ex.prompt) : len(s)] = 1.0
    return feats, masks, mx.array(ids), mx.array(weight)


def batch_loss(cab: Cabstractor, lm: nn.Module, feats, masks, ids, weight) -> mx.array:
    """Mean next-token cross-entropy over the supervised text tokens."""
    logits = text_logits(lm, cab(feats, masks), ids)  # (B, L, V)
    ce = nn.losses.cross_entropy(logits.astype(mx.float32), ids)  # (B, L)
    return (ce * weight).sum() / mx.maximum(weight.sum(), 1.0)


def exact_match(cab: Cabstractor, lm: nn.Module, examples: Sequence[FeatureExample]) -> float:
    """Share of examples whose every text token is the LM's argmax (teacher-forced)."""
    hits = 0
    for start in range(0, len(examples), 64):
        feats, masks, ids, weight = collate(examples[start : start + 64])
        pred = text_logits(lm, cab(feats, masks), ids).argmax(axis=-1)  # (B, L)
        wrong = ((pred != ids) & (weight > 0)).sum(axis=1)
        hits += int((wrong == 0).sum().item())
    return hits / max(len(examples), 1)


def train_cabstractor(
    lm: nn.Module,
    examples: Sequence[FeatureExample],
    cfg: CabstractorConfig,
    steps: int = 300,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    seed: int = 0,
    log=print,
) -> Cabstractor:
    """Fit a new Cabstractor so the frozen ``lm`` says each example's text after its soft tokens."""
    mx.random.seed(seed)
    cab = Cabstractor(cfg)
    lm.eval()
    opt = optim.AdamW(learning_rate=learning_rate, weight_decay=0.0)
    step_fn = nn.value_and_grad(cab, lambda *a: batch_loss(cab, lm, *a))
    rng = np.random.default_rng(seed)
    order: List[int] = []
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        if len(order) < batch_size:
            order += list(rng.permutation(len(examples)))
        idx, order = order[:batch_size], order[batch_size:]
        loss, grads = step_fn(*collate([examples[i] for i in idx]))
        opt.update(cab, grads)
        mx.eval(cab.parameters(), opt.state, loss)
        if not np.isfinite(loss.item()):  # a NaN model is not worth saving
            raise ValueError(
                f"cabstractor training diverged: loss {loss.item()} at step {step}; nothing "
                "saved (lower --learning-rate or check the features)"
            )
        if step == 1 or step % max(1, steps // 10) == 0 or step == steps:
            if log is not None:
                log(
                    f"step {step}/{steps}: loss {loss.item():.4f} ({time.perf_counter() - t0:.0f}s)"
                )
    return cab


def save_cabstractor(cab: Cabstractor, out_dir: Path, extra: Optional[Dict] = None) -> Path:
    out_dir = Path(out_dir)
    tmp = make_tmp_dir(out_dir)  # written whole, then renamed: a full disk leaves nothing
    try:
        mx.save_safetensors(
            str(tmp / "cabstractor.safetensors"), dict(tree_flatten(cab.parameters()))
        )
        meta = {"cabstractor": cab.cfg.as_dict(), **(extra or {})}
        (tmp / "cabstractor.json").write_text(json.dumps(meta, indent=2) + "\n")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def load_cabstractor(path: str | Path) -> Cabstractor:
    path = Path(path)
    if not (path / "cabstractor.json").is_file():
        raise FileNotFoundError(f"{path} has no cabstractor.json: train one with cabstractor train")
    meta = json.loads((path / "cabstractor.json").read_text())
    cab = Cabstractor(CabstractorConfig(**meta["cabstractor"]))
    cab.load_weights(str(path / "cabstractor.safetensors"), strict=True)
    return cab


def run(cfg: CabTrainConfig, log=print) -> Dict:
    """The CLI job: load the frozen LM and its tokenizer, read the features, train, evaluate the
    held-out share, save to ``out``."""

    model_dir = resolve(cfg.model)
    out = Path(cfg.out) if cfg.out else RUNS_DIR / f"cabstractor-{Path(cfg.features_dir).name}"
    check_output(out, [model_dir, cfg.features_dir], cfg.force)
    lm, lm_cfg = load_model(model_dir)
    tok = load_tokenizer(model_dir)
    examples = load_feature_examples(
        cfg.features_dir, lambda s: tok.encode(s, add_special_tokens=False)
    )
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(examples))
    n_valid = int(round(cfg.valid_fraction * len(examples))) if len(examples) > 1 else 0
    valid = [examples[i] for i in perm[:n_valid]]
    train = [examples[i] for i in perm[n_valid:]]
    hidden = int(lm_cfg["hidden_size"])
    ccfg = CabstractorConfig(
        feature_dims=[a.shape[-1] for a in examples[0].features],
        out_dims=hidden,
        dims=cfg.dims or min(hidden, 1024),
        num_queries=cfg.num_queries,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
    )
    log(f"{len(train)} training / {len(valid)} held-out examples, {len(ccfg.feature_dims)} streams")
    cab = train_cabstractor(
        lm, train, ccfg, cfg.steps, cfg.batch_size, cfg.learning_rate, cfg.seed, log
    )
    result = {"train_exact_match": exact_match(cab, lm, train)}
    if valid:
        result["valid_exact_match"] = exact_match(cab, lm, valid)
    save_cabstractor(cab, out, {"model": str(model_dir), **result})
    log(", ".join(f"{k} {v:.1%}" for k, v in result.items()) + f"; saved to {out}")
    return {"out": str(out), **result}
