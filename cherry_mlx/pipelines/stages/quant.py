"""Stage 4 of ``repro``: quantisation.

Every mode of ``quant.quantize.MODES`` applied to the source, and NVFP4 calibrated (AWQ, GPTQ),
with distillation-trained scales (DWQ: ``quantize --dwq-steps``, the scales fitted to the fp32
model's top-k next-token distribution on the calibration batches) or with the embedding kept or
in 8 bits: held-out perplexity (chat and English prose), bits per
weight, weight memory, decode and prefill speed. Decode speed is the quantised model's;
perplexity is computed on its dequantised weights, the same function up to float rounding
(``tests/test_quant.py`` checks the logits), since MLX's CPU quantised matmul is 5-13x slower.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List

from cherry_mlx.evaluation.quantization import calibration_batches
from cherry_mlx.evaluation.verdict import claim_row
from cherry_mlx.models.loading import load_model
from cherry_mlx.pipelines.context import Context, StageBar, chat_prompts, greedy_decode
from cherry_mlx.pipelines.quantize import quantize
from cherry_mlx.pipelines.report import fmt
from cherry_mlx.pipelines.stage import Stage
from cherry_mlx.quant.distill import DistillConfig
from cherry_mlx.quant.quantize import MODES, dequantize, quantize_model, weight_memory

# calibrated / mixed-precision NVFP4 next to round-to-nearest: (row name, mode, quantize_model kw)
VARIANTS = (
    ("nvfp4+awq", "nvfp4", {"calibrate": "awq"}),
    ("nvfp4+gptq", "nvfp4", {"calibrate": "gptq"}),
    ("nvfp4+dwq", "nvfp4", {"dwq": True}),
    ("nvfp4 keep embed", "nvfp4", {"keep": ["embed"]}),
    ("nvfp4 embed affine8", "nvfp4", {"keep": ["embed:affine8"]}),
    ("nvfp4+awq embed affine8", "nvfp4", {"calibrate": "awq", "keep": ["embed:affine8"]}),
)


def run_quant(ctx: Context) -> Dict[str, Any]:
    b = ctx.budget
    runs = [("fp32", None, {})] + [(m, m, {}) for m in MODES] + list(VARIANTS)
    bar = StageBar("quant", len(runs))
    prompts = chat_prompts(ctx.tokenizer, ctx.cfg.data, 1)
    calib = calibration_batches(str(ctx.source_dir), ctx.cfg.data, samples=16,
                                batch_size=b.batch_size, max_len=b.seq_len)  # fmt: skip
    res: Dict[str, Any] = {"modes": []}
    root = ctx.runs_dir("quant", fresh=True)
    for name, mode, kw in runs:
        dwq = None
        if kw.get("dwq"):
            model, dwq = dwq_model(ctx, calib, root / "nvfp4-dwq")
        else:
            model, config = ctx.load_source()
            if mode is not None:
                model, _ = quantize_model(model, config, mode, calib=calib, **kw)
        greedy_decode(model, prompts, 4)  # warm-up
        _, st = greedy_decode(model, prompts, b.decode_tokens)  # speed: the quantised model itself
        mem = weight_memory(model)
        ev = ctx.evaluate(dequantize(model))  # same function, fp32 matmuls (CPU: 5-13x faster)
        res["modes"].append({
            "mode": name, "chat_ppl": ev["chat"]["perplexity"],
            "en_ppl": ev.get("en", {}).get("ppl", math.nan), "bits_per_weight":
            mem["bits_per_weight"], "mib": mem["bytes"] / 2**20, "decode_tps": st.decode_tps,
            "prefill_tps": st.prefill_tps, **({"dwq": dwq} if dwq else {}),
        })  # fmt: skip
        bar.step(name)
    bar.close()
    return res


def dwq_model(ctx: Context, calib: list, out):
    """NVFP4 with distillation-trained scales through ``quantize``'s public path (teacher
    targets from the run's shared teacher cache of the fp32 source), saved into the stage's run
    directory and loaded back; (model, DWQ summary)."""
    steps = ctx.cfg.knobs("quant")["dwq_steps"]
    every = max(1, steps // 5)
    cfg = DistillConfig(steps=steps, batch_size=ctx.budget.batch_size,
                        warmup=min(10, every), log_every=every)  # fmt: skip
    cache = ctx.teacher_cache(sum(len(c) for c in calib))  # the run's one teacher cache
    rep = quantize(str(ctx.source_dir), out, mode="nvfp4", calib=calib, dwq=cfg,
                   teacher_cache=cache.path, log=lambda *_: None)  # fmt: skip
    model, _ = load_model(out)
    return model, {**rep.calibration.get("dwq", {}), "samples": sum(len(c) for c in calib)}


def quant_rows(res: Dict[str, Any]) -> List[Dict[str, Any]]:
    fp = res["modes"][0]
    rows = []
    for m in res["modes"][1:]:
        rel = m["chat_ppl"] / fp["chat_ppl"] - 1
        rows.append(claim_row(
            "Quantisation", f"{m['mode']}: held-out perplexity within 5% of fp32",
            "NVFP4 memory only (no perplexity reported)", [rel], threshold=0.05, greater=False,
            exact=True, control=f"chat ppl {fp['chat_ppl']:.3g} → {m['chat_ppl']:.3g}, English "
            f"prose {fp['en_ppl']:.3g} → {m['en_ppl']:.3g}; "
            f"{m['bits_per_weight']:.2f} bits/weight, {m['mib']:.2f} MiB; decode "
            f"{m['decode_tps'] / fp['decode_tps']:.2f}× fp32",
        ))  # fmt: skip
    by = {m["mode"]: m for m in res["modes"]}
    if "nvfp4+dwq" in by and "nvfp4" in by:
        d, r, q = by["nvfp4+dwq"].get("dwq") or {}, by["nvfp4"], by["nvfp4+dwq"]
        rows.append(claim_row(
            "Quantisation", "nvfp4+dwq (distilled scales) has lower held-out perplexity than "
            "round-to-nearest nvfp4", "not compared (NVFP4 round-to-nearest only)",
            [q["chat_ppl"]], [r["chat_ppl"]], greater=False, exact=True,
            control=f"chat ppl {r['chat_ppl']:.3g} → {q['chat_ppl']:.3g}, English prose "
            f"{r['en_ppl']:.3g} → {q['en_ppl']:.3g}; {d.get('steps')} DWQ steps on "
            f"{d.get('samples')} calibration windows, top-k KL {fmt(d.get('kl_first'))} → "
            f"{fmt(d.get('kl_last'))}, {fmt(d.get('seconds'))} s",
        ))  # fmt: skip
    return rows


def quant_section(res: Dict[str, Any]) -> List[str]:
    lines = [
        "| mode | chat ppl | en ppl | bits/weight | MiB | decode tok/s | prefill tok/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in res["modes"]:
        lines.append(
            f"| {m['mode']} | {fmt(m['chat_ppl'])} | {fmt(m['en_ppl'])} | "
            f"{m['bits_per_weight']:.2f} | {m['mib']:.2f} | {fmt(m['decode_tps'])} | "
            f"{fmt(m['prefill_tps'])} |"
        )
    return lines


def plot(res: Dict[str, Any]):
    return (
        [m["mode"] for m in res["modes"]],
        [[m["chat_ppl"]] for m in res["modes"]],
        "held-out chat perplexity",
    )


STAGE = Stage(
    name="quant",
    order=40,
    title="4. Quantisation",
    run=run_quant,
    rows=quant_rows,
    section=quant_section,
    plot=plot,
    # distillation steps of the NVFP4 + DWQ arm (scales only; batches of the budget's batch size)
    knobs={"dwq_steps": {"tiny": 2, "cpu": 30, "paper": 200}},
)
