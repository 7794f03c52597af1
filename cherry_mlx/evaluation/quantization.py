"""``cherry-mlx quantize`` as a library call: quantise a saved model (optionally calibrated:
GPTQ, sensitivity-chosen keep lists), save it, and measure what the quantisation cost (weight
memory, bits per weight, held-out loss and perplexity, prefill and decode speed)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import mlx.core as mx

from cherry_mlx.decoding.generate import decode_step, prefill
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
    speed: Optional[Dict[str, Dict[str, float]]] = None
    calibration: Dict = field(default_factory=dict)

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
        if self.calibration.get("keep_auto") is not None:
            ka = self.calibration["keep_auto"]
            lines.append(f"keep auto ({self.calibration['keep_auto_bits']:.2f} bits/weight): "
                         + (", ".join(ka) if ka else "nothing fits the budget"))  # fmt: skip
        if self.calibration.get("calibrate"):
            lines.append(f"calibrated: {self.calibration['calibrate']} "
                         f"({self.calibration.get('gptq_layers', 0)} layers)")  # fmt: skip
        for name, sp in (self.speed or {}).items():
            lines.append(f"{name}: prefill {sp['prefill']:.0f} tok/s, decode {sp['decode']:.1f} "
                         f"tok/s")  # fmt: skip
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


def quantize(
    model_name: str,
    out_dir: str | Path,
    mode: str = "nvfp4",
    keep: Optional[str] = None,
    batches: Optional[list] = None,
    fold: bool = True,
    force: bool = False,
    calibrate: Optional[str] = None,
    calib: Optional[list] = None,
    measure_speed: bool = False,
) -> QuantReport:
    """Load ``model_name``, quantise, save to ``out_dir`` (with its tokenizer) and report.
    ``force``: write into a non-empty ``out_dir`` (``outputs.check_output``)."""
    check_output(out_dir, [resolve(model_name)], force)
    keep_list = parse_keep(keep)
    model, config = load_model(model_name)
    source = weight_memory(model)
    loss_src = heldout_loss(model, batches) if batches else None
    speeds = {"source": speed(model)} if measure_speed else None
    model, qconfig = quantize_model(model, config, mode, keep_list, fold=fold,
                                    calibrate=calibrate, calib=calib)  # fmt: skip
    out = save_model(model, out_dir, qconfig, tokenizer_dir=resolve(model_name))
    fixed = [k for k in keep_list if not k.startswith("auto")]
    report = QuantReport(mode, str(out), source, weight_memory(model), fixed)
    report.calibration = {k: v for k, v in qconfig["cherry_quant"].items() if k != "sensitivity"}
    if batches:
        loss_q, ntok = heldout_loss(model, batches)
        report.loss = {"source": loss_src[0], "quantized": loss_q, "tokens": ntok}
    if measure_speed:
        report.speed = {**speeds, mode: speed(model)}
    return report


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
