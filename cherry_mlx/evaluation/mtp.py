"""Held-out accuracy of MTP heads: how often each head's top-1 token is right, and how often it
agrees with the trunk's own greedy token (a proxy of greedy draft acceptance)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import mlx.core as mx

from cherry_mlx.models.mtp import has_mtp


def mtp_accuracy(model, batches) -> Dict[str, Any]:
    """Top-1 accuracy of the trunk (next token) and of each head (token t+k+1) on response
    positions of held-out batches, and each head's agreement with the trunk's own greedy token
    there (a proxy of greedy draft acceptance):
    ``{"trunk": a0, "heads": [a1, ..., aK], "agree": [g1, ..., gK], "tokens": n}``."""
    if not has_mtp(model):
        raise ValueError("model has no MTP heads (config key 'mtp'); nothing to evaluate")
    K = model.mtp.num_heads
    hits, agree, counts = [0.0] * (K + 1), [0.0] * (K + 1), [0.0] * (K + 1)
    for batch in batches:
        h0 = model.hidden(batch["inputs"])
        states = [h0] + model.mtp.sequence_states(model, h0, batch["inputs"])
        trunk = None
        for k, hk in enumerate(states):
            resp = batch["response"][:, k:]
            pred = mx.argmax(model.logits(hk), axis=-1)  # (B, L-k)
            trunk = pred if k == 0 else trunk
            hits[k] += ((pred == batch["targets"][:, k:]) & resp).astype(mx.float32).sum().item()
            agree[k] += ((pred == trunk[:, k:]) & resp).astype(mx.float32).sum().item()
            counts[k] += resp.astype(mx.float32).sum().item()
    acc = [h / max(c, 1.0) for h, c in zip(hits, counts)]
    agr = [g / max(c, 1.0) for g, c in zip(agree, counts)]
    return {"trunk": acc[0], "heads": acc[1:], "agree": agr[1:], "tokens": int(counts[0])}


def report_mtp_accuracy(model, batches, run_dir=None) -> str:
    """Per-head held-out accuracy as one line (and ``mtp_accuracy.json`` in the run dir)."""
    acc = mtp_accuracy(model, batches)
    if run_dir is not None:
        (Path(run_dir) / "mtp_accuracy.json").write_text(json.dumps(acc, indent=2) + "\n")
    heads = ", ".join(
        f"head {k} (t+{k + 1}) {a:.1%} (agrees with trunk {g:.1%})"
        for k, (a, g) in enumerate(zip(acc["heads"], acc["agree"]), 1)
    )
    return f"[mtp] held-out top-1: trunk (t+1) {acc['trunk']:.1%}, {heads} ({acc['tokens']} tok)"


class MTPAccuracyReport:
    """Trainer callback: per-head held-out accuracy once training ends (``train --mtp K``)."""

    def __init__(self, batches=None, max_batches: int = 8, log=print):
        self.batches, self.max_batches, self.log = batches, max_batches, log

    def on_train_end(self, result) -> None:
        batches = self.batches if self.batches is not None else result.valid_batches
        if not batches or not has_mtp(result.model):
            return
        if self.max_batches > 0:
            batches = batches[: self.max_batches]
        self.log(report_mtp_accuracy(result.model, batches, result.run_dir))
