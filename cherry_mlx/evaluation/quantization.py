"""``cherry-mlx quantize`` as a library call: quantise a saved model, save it, and measure what
the quantisation cost (weight memory, bits per weight, held-out loss and perplexity)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import mlx.core as mx

from cherry_mlx.models.loading import load_model, load_tokenizer, resolve, save_model
from cherry_mlx.models.outputs import check_output
from cherry_mlx.quant.quantize import parse_keep, quantize_model, weight_memory
from cherry_mlx.selection.losses import per_token_ce
from cherry_mlx.training.data import default_data_dir, load_split, valid_batches


@dataclass
class QuantReport:
    mode: str
    out_dir: str
    source: Dict[str, float]
    quantized: Dict[str, float]
    kept: List[str] = field(default_factory=list)
    loss: Optional[Dict[str, float]] = None

    def summary(self) -> str:
        s, q = self.source, self.quantized
        lines = [
            f"{self.mode}: {q['bits_per_weight']:.2f} bits/weight overall "
            f"({q['quantized_bits_per_weight']:.2f} in quantised matrices), weights "
            f"{s['bytes'] / 2**20:.2f} MiB -> {q['bytes'] / 2**20:.2f} MiB "
            f"({q['bytes'] / s['bytes']:.1%})",
        ]
        if self.kept:
            lines.append("kept in full precision: " + ", ".join(self.kept))
        if self.loss:
            lo = self.loss
            lines.append(
                f"held-out loss {lo['source']:.4f} -> {lo['quantized']:.4f} "
                f"({lo['quantized'] - lo['source']:+.4f}); perplexity {math.exp(lo['source']):.2f}"
                f" -> {math.exp(lo['quantized']):.2f} ({lo['tokens']} tokens)"
            )
        lines.append(f"saved to {self.out_dir}")
        return "\n".join(lines)


def heldout_loss(model, batches) -> Tuple[float, int]:
    """Mean response-token cross-entropy over batches (the losses.py batch contract)."""
    tot, n = 0.0, 0.0
    for b in batches:
        ce = per_token_ce(model(b["inputs"]), b["targets"])
        resp = b["response"].astype(mx.float32)
        tot += (ce * resp).sum().item()
        n += resp.sum().item()
    return tot / max(n, 1.0), int(n)


def quantize(
    model_name: str,
    out_dir: str | Path,
    mode: str = "nvfp4",
    keep: Optional[str] = None,
    batches: Optional[list] = None,
    fold: bool = True,
    force: bool = False,
) -> QuantReport:
    """Load ``model_name``, quantise, save to ``out_dir`` (with its tokenizer) and report.
    ``force``: write into a non-empty ``out_dir`` (``outputs.check_output``)."""
    check_output(out_dir, [resolve(model_name)], force)
    keep_list = parse_keep(keep)
    model, config = load_model(model_name)
    source = weight_memory(model)
    loss_src = heldout_loss(model, batches) if batches else None
    model, qconfig = quantize_model(model, config, mode, keep_list, fold=fold)
    out = save_model(model, out_dir, qconfig, tokenizer_dir=resolve(model_name))
    report = QuantReport(mode, str(out), source, weight_memory(model), keep_list)
    if batches:
        loss_q, ntok = heldout_loss(model, batches)
        report.loss = {"source": loss_src[0], "quantized": loss_q, "tokens": ntok}
    return report


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
