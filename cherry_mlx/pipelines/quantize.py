"""``cherry-mlx quantize`` as a library call: quantise a saved model (optionally calibrated:
GPTQ, AWQ, sensitivity-chosen keep lists), save it, and report what the quantisation cost
(weight memory, bits per weight, held-out loss and perplexity, prefill and decode speed)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from cherry_mlx.decoding.session import default_model
from cherry_mlx.evaluation.quantization import (
    calibration_batches,
    heldout_batches,
    heldout_loss,
    speed,
)
from cherry_mlx.models.loading import load_model, resolve, save_model
from cherry_mlx.models.outputs import check_output
from cherry_mlx.pipelines.quantize_config import QuantizeConfig
from cherry_mlx.quant.quantize import parse_keep, quantize_model, weight_memory


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
        plain = [k for k in self.kept if ":" not in k]  # NAME:MODE is quantised, not kept
        if plain:
            lines.append("kept in full precision: " + ", ".join(plain))
        if len(plain) < len(self.kept):
            lines.append("other formats: " + ", ".join(k for k in self.kept if ":" in k))
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


def run_quantize(cfg: QuantizeConfig, log=print) -> QuantReport:
    """The ``quantize`` command: check the output directory (once, before any data is read),
    read the held-out and calibration batches, quantise, save and report."""
    model = cfg.model or default_model()
    src = resolve(model)
    out = cfg.out or str(Path(src).parent / f"{Path(src).name}-{cfg.mode}")
    check_output(out, [src], cfg.force)
    batches = heldout_batches(model, cfg.data, cfg.eval_batches) if cfg.eval_batches else None
    if cfg.eval_batches and not batches:
        log("no held-out data found (pass --data); skipping the loss comparison")
    calib = None
    if cfg.needs_calibration:
        calib = calibration_batches(model, cfg.calib_data, cfg.calib_samples)
    return quantize(model, out, mode=cfg.mode, keep=cfg.keep, batches=batches, fold=cfg.fold,
                    calibrate=cfg.calibrate, calib=calib, measure_speed=cfg.speed)  # fmt: skip


def quantize(
    model_name: str,
    out_dir: str | Path,
    mode: str = "nvfp4",
    keep: Optional[str] = None,
    batches: Optional[list] = None,
    fold: bool = True,
    calibrate: Optional[str] = None,
    calib: Optional[list] = None,
    measure_speed: bool = False,
) -> QuantReport:
    """Load ``model_name``, quantise, save to ``out_dir`` (with its tokenizer) and report.
    ``out_dir`` must have passed ``outputs.check_output`` (``run_quantize`` checks it)."""
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
