"""Rows 3 and 4 of ``repro``: serving. Self-speculative MTP decoding and quantisation.

MTP: K heads trained on the frozen source trunk with the trunk's own greedy tokens as targets
(self-distillation: what greedy drafting must match) over the reduced draft vocabulary, plus
EAGLE's feature regression, at every prompt and response position; then per-head held-out
accuracy and
agreement with the trunk, per-head acceptance while decoding (share of verify passes that accept at
least k drafts), tokens per pass, and the decode speed against plain greedy decoding for
K = 1..heads on held-out chat prompts, with greedy output checked identical. Each repetition times
plain and speculative decoding back to back; the speedup's spread over repetitions is its noise.

Quantisation: every mode of ``quant.quantize.MODES`` applied to the source, and NVFP4 calibrated
(AWQ, GPTQ) or with the embedding kept or in 8 bits: held-out perplexity (chat and English prose),
bits per weight, weight memory, decode and prefill speed. Decode speed is the quantised model's;
perplexity is computed on its dequantised weights, the same function up to float rounding
(``tests/test_quant.py`` checks the logits), since MLX's CPU quantised matmul is 5-13x slower.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List

from cherry_mlx.decoding.adaptive import AdaptiveDraft
from cherry_mlx.decoding.generate import GenerationStats, generate_tokens
from cherry_mlx.decoding.speculative import speculative_generate_tokens
from cherry_mlx.evaluation.mtp import mtp_accuracy
from cherry_mlx.evaluation.quantization import calibration_batches
from cherry_mlx.evaluation.repro_common import Context, StageBar, chat_prompts
from cherry_mlx.evaluation.verdict import claim_row
from cherry_mlx.quant.quantize import MODES, dequantize, quantize_model, weight_memory

HEAD_LR = 1e-3  # heads start from scratch on a frozen trunk: a fine-tuning rate is too small
HEAD_FEATURE_WEIGHT = 1.0  # EAGLE's regression of the trunk's next state beside the token loss
DRAFT_VOCAB = 4096  # most frequent training tokens the heads draft from (at most half the vocab)


def _decode(model, prompts, n: int, k: int = 0):
    """(tokens per prompt, stats) of greedy decoding; ``k`` > 0 drafts up to k tokens with MTP
    heads, one adaptive controller across the prompts (as a chat session keeps one)."""
    st, outs = GenerationStats(), []
    ctrl = AdaptiveDraft(k) if k else None
    for p in prompts:
        if k:
            gen = speculative_generate_tokens(model, p, max_tokens=n, stats=st, num_draft=k,
                                              adaptive=ctrl)  # fmt: skip
        else:
            gen = generate_tokens(model, p, max_tokens=n, stats=st)
        outs.append(list(gen))
    return outs, st


def run_mtp(ctx: Context) -> Dict[str, Any]:
    b = ctx.budget
    K = b.mtp_heads
    bar = StageBar("mtp", 2 + K)
    ctx.runs_dir("mtp", fresh=True)
    model, _ = ctx.load_source()
    # EAGLE-3's reduced draft vocabulary: on CPU a head's full LM head would cost a trunk step
    draft = min(DRAFT_VOCAB, model.args.vocab_size // 2)
    cfg = ctx.train_cfg("mtp", "heads", b.mtp_steps, 0, mtp=K, freeze_trunk=True,
                        mtp_targets="trunk", learning_rate=HEAD_LR,
                        mtp_draft_vocab=draft,
                        mtp_feature_weight=HEAD_FEATURE_WEIGHT)  # fmt: skip
    ctx.fit(model, cfg)
    if len(model.args.mtp.get("draft_vocab", ())) != draft:
        raise RuntimeError("the trained heads lost their draft vocabulary")
    model.eval()
    bar.step("heads trained")
    res: Dict[str, Any] = {"heads": K, "steps": b.mtp_steps, "draft_vocab": draft,
                           "accuracy": mtp_accuracy(
        model, ctx.sets["chat"])}  # fmt: skip
    prompts = chat_prompts(ctx.tokenizer, ctx.cfg.data, b.decode_prompts)
    _decode(model, prompts[:1], 4)  # warm-up: compile and allocate outside the timings
    plain_out, _ = _decode(model, prompts, b.decode_tokens)
    bar.step("plain decode")
    res["decode"] = []
    for k in range(1, K + 1):
        speedups, plain_tps, spec_tps, identical, hist, rounds = [], [], [], True, [], 0
        for _ in range(b.decode_reps):
            _, p = _decode(model, prompts, b.decode_tokens)
            out, s = _decode(model, prompts, b.decode_tokens, k)
            identical &= out == plain_out
            plain_tps.append(p.decode_tps)
            spec_tps.append(s.decode_tps)
            speedups.append(s.decode_tps / p.decode_tps if p.decode_tps else math.nan)
            hist += s.accept_hist
            rounds = s.rounds
        accept = [sum(a >= j for a in hist) / len(hist) if hist else 0.0 for j in range(1, k + 1)]
        res["decode"].append({
            "k": k, "speedup": speedups, "plain_tps": plain_tps, "spec_tps": spec_tps,
            "tokens_per_pass": (sum(hist) + len(hist)) / len(hist) if hist else 0.0,
            "accept_at_least": accept, "identical": bool(identical), "rounds": rounds,
        })  # fmt: skip
        bar.step(f"K={k}")
    res["rows"] = mtp_rows(res)
    bar.close()
    return res


def mtp_rows(res: Dict[str, Any]) -> List[Dict[str, Any]]:
    acc = res["accuracy"]
    heads = ", ".join(f"{a:.2f}" for a in acc["agree"])
    rows = []
    for d in res["decode"]:
        acc_k = ", ".join(f"{a:.2f}" for a in d["accept_at_least"])
        rows.append(claim_row(
            "MTP (serving)", f"self-speculative greedy speedup ≥ 1.6× with K={d['k']}",
            "1.6-2.1×", d["speedup"], threshold=1.6, spread="repetitions",
            control=f"{d['tokens_per_pass']:.2f} tok/pass; P(≥j accepted) {acc_k}; "
            f"head/trunk agreement {heads}; draft vocabulary {res.get('draft_vocab') or 'full'}",
        ))  # fmt: skip
        rows.append(claim_row(
            "MTP (serving)", f"adaptive drafting never slower than 0.95× plain (K={d['k']})",
            "(our goal; the paper has no such control)", d["speedup"], threshold=0.95,
            spread="repetitions",
        ))  # fmt: skip
        rows.append(claim_row(
            "MTP (serving)", f"greedy output identical to plain decoding (K={d['k']})",
            "exact by construction", [1.0 if d["identical"] else 0.0], threshold=0.5,
            exact=True,
        ))  # fmt: skip
    return rows


# calibrated / mixed-precision NVFP4 next to round-to-nearest: (row name, mode, quantize_model kw)
VARIANTS = (
    ("nvfp4+awq", "nvfp4", {"calibrate": "awq"}),
    ("nvfp4+gptq", "nvfp4", {"calibrate": "gptq"}),
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
    for name, mode, kw in runs:
        model, config = ctx.load_source()
        if mode is not None:
            model, _ = quantize_model(model, config, mode, calib=calib, **kw)
        _decode(model, prompts, 4)  # warm-up
        _, st = _decode(model, prompts, b.decode_tokens)  # speed: the quantised model itself
        mem = weight_memory(model)
        ev = ctx.evaluate(dequantize(model))  # same function, fp32 matmuls (CPU: 5-13x faster)
        res["modes"].append({
            "mode": name, "chat_ppl": ev["chat"]["perplexity"],
            "en_ppl": ev.get("en", {}).get("ppl", math.nan), "bits_per_weight":
            mem["bits_per_weight"], "mib": mem["bytes"] / 2**20, "decode_tps": st.decode_tps,
            "prefill_tps": st.prefill_tps,
        })  # fmt: skip
        bar.step(name)
    res["rows"] = quant_rows(res)
    bar.close()
    return res


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
    return rows
