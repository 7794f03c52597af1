"""``cherry-mlx quantize`` as a library call: quantise a saved model (optionally calibrated:
GPTQ, AWQ, sensitivity-chosen keep lists or bits budget, distillation-trained scales), save it,
and report what the quantisation cost (weight memory, bits per weight, held-out chat loss and
perplexity, English prose perplexity, prefill and decode speed)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import mlx.core as mx

from cherry_mlx.data.teacher_cache import TeacherCache, model_fingerprint
from cherry_mlx.decoding.session import default_model
from cherry_mlx.evaluation.quantization import (
    calibration_batches,
    heldout_batches,
    heldout_loss,
    prose_perplexity,
    prose_windows,
    speed,
)
from cherry_mlx.models.loading import ModelNotFound, load_model, resolve, save_model
from cherry_mlx.models.outputs import check_output
from cherry_mlx.pipelines.quantize_config import QuantizeConfig
from cherry_mlx.quant.distill import DistillConfig, cache_targets, distill
from cherry_mlx.quant.fakequant import from_fake, to_fake
from cherry_mlx.quant.quantize import parse_keep, quantize_model, weight_memory
from cherry_mlx.training.data import default_data_dir
from cherry_mlx.training.teacher import build_cache
from cherry_mlx.training.teacher_config import TeacherConfig


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
    prose_ppl: Optional[Dict[str, float]] = None

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
        if self.prose_ppl:
            pp = self.prose_ppl
            rise = pp["quantized"] / pp["source"] - 1
            lines.append(f"English prose perplexity {pp['source']:.2f} -> {pp['quantized']:.2f} "
                         f"({rise:+.1%}, {pp['tokens']} tokens)")  # fmt: skip
        if self.calibration.get("upgraded") is not None:
            up = self.calibration["upgraded"]
            which = (": " + ", ".join(f"{p} {m}" for p, m in up.items())) if up else ""
            bits = self.calibration["budget_bits"]
            lines.append(f"bits budget ({bits:.2f} bits/weight): {len(up)} layers with more bits"
                         + which)  # fmt: skip
        if self.calibration.get("dwq"):
            d = self.calibration["dwq"]
            lines.append(f"distilled scales: {d['steps']} steps, top-k KL {d['kl_first']:.4f} -> "
                         f"{d['kl_last']:.4f}; real kernels vs trained logits max |d| "
                         f"{d['real_vs_fake_max_abs']:.2e}")  # fmt: skip
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
    prose = _prose(model, cfg.prose)
    calib = None
    if cfg.needs_calibration:
        calib = calibration_batches(model, cfg.calib_data, cfg.calib_samples)
    dwq, teacher = None, None
    if cfg.dwq_steps:
        dwq = DistillConfig(steps=cfg.dwq_steps, batch_size=cfg.dwq_batch, lr=cfg.dwq_lr)
        teacher = dwq_teacher(cfg, src, out, log)
    return quantize(model, out, mode=cfg.mode, keep=cfg.keep, batches=batches, fold=cfg.fold,
                    calibrate=cfg.calibrate, calib=calib, measure_speed=cfg.speed,
                    bits_budget=cfg.bits_budget, dwq=dwq, teacher_cache=teacher, prose=prose,
                    log=log)  # fmt: skip


def dwq_teacher(cfg: QuantizeConfig, src: Path, out: str, log=print) -> Path:
    """The teacher cache DWQ reads: ``--teacher-cache``, or one built now (once, resumable)
    into OUT/teacher-cache from ``--calib-data``, as ``compress --heal-with distill`` does."""
    if cfg.teacher_cache:
        return Path(cfg.teacher_cache)
    path = Path(out) / "teacher-cache"
    log(f"building the teacher cache in {path} (once; resumable; reuse it with --teacher-cache)")
    data = cfg.calib_data or str(default_data_dir())
    build_cache(TeacherConfig(model=str(src), out=str(path), data=data, k=cfg.dwq_topk,
                              seq_len=256, max_rows=cfg.calib_samples), log=log)  # fmt: skip
    return path


def _prose(model: str, path: Optional[str]):
    """Held-out English prose windows: ``path``, else the bundled file when the model has a
    tokenizer to encode it (None when it has none or ``path`` is 'none')."""
    if (path or "").lower() == "none":
        return None
    if path:
        return prose_windows(model, path)
    try:
        return prose_windows(model, None)
    except ModelNotFound:  # no tokenizer: the chat loss is skipped too
        return None


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
    bits_budget: Optional[float] = None,
    dwq: Optional[DistillConfig] = None,
    teacher_cache: Optional[str | Path] = None,
    prose: Optional[mx.array] = None,
    log=print,
) -> QuantReport:
    """Load ``model_name``, quantise, save to ``out_dir`` (with its tokenizer) and report.
    ``out_dir`` must have passed ``outputs.check_output`` (``run_quantize`` checks it); ``dwq``
    trains the scales against ``teacher_cache`` (a teacher cache of this model)."""
    keep_list = parse_keep(keep)
    model, config = load_model(model_name)
    source = weight_memory(model)
    loss_src = heldout_loss(model, batches) if batches else None
    ppl_src = prose_perplexity(model, prose) if prose is not None else None
    speeds = {"source": speed(model)} if measure_speed else None
    targets = _teacher(dwq, teacher_cache, model_name)
    model, qconfig = quantize_model(model, config, mode, keep_list, fold=fold,
                                    calibrate=calibrate, calib=calib,
                                    bits_budget=bits_budget)  # fmt: skip
    if dwq is not None:
        qconfig["cherry_quant"]["dwq"] = _distill(model, targets, dwq, log)
    out = save_model(model, out_dir, qconfig, tokenizer_dir=resolve(model_name))
    fixed = [k for k in keep_list if not k.startswith("auto")]
    report = QuantReport(mode, str(out), source, weight_memory(model), fixed)
    report.calibration = {k: v for k, v in qconfig["cherry_quant"].items() if k != "sensitivity"}
    if batches:
        loss_q, ntok = heldout_loss(model, batches)
        report.loss = {"source": loss_src[0], "quantized": loss_q, "tokens": ntok}
    if prose is not None:
        report.prose_ppl = {"source": ppl_src, "quantized": prose_perplexity(model, prose),
                            "tokens": int(prose[:, 1:].size)}  # fmt: skip
    if measure_speed:
        report.speed = {**speeds, mode: speed(model)}
    return report


def _teacher(dwq, cache, model_name):
    """DWQ's targets: the full-precision model's top-k from its teacher cache (checked to be a
    cache of this model)."""
    if dwq is None:
        return None
    if cache is None:
        raise ValueError(
            "distilled scales need a teacher cache: pass --teacher-cache DIR "
            "(cherry-mlx teacher build MODEL -o DIR) or let quantize build one"
        )
    fp = model_fingerprint(resolve(model_name))
    return cache_targets(TeacherCache.open(cache, fingerprint=fp, purpose="quantisation (DWQ)"))


def _distill(model, targets, cfg: DistillConfig, log) -> Dict:
    """Train the scales through fake quantisation, pack them back, and check that the real
    quantised kernels give the trained logits."""
    to_fake(model)
    st = distill(model, targets, cfg, log=log)
    x = targets[0][:1, :-1]  # (1, T)
    fake = model(x)
    from_fake(model)
    d = mx.abs(model(x) - fake).max().item()
    n = max(1, min(10, len(st.losses)))
    return {"steps": st.step, "kl_first": sum(st.losses[:n]) / n,
            "kl_last": sum(st.losses[-n:]) / n, "seconds": round(st.seconds, 1),
            "real_vs_fake_max_abs": d}  # fmt: skip
