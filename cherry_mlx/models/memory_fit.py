"""The memory plan as ``cherry-mlx info`` prints it, and what fits 24, 64 and 128 GB.

The table's common sizes are public Llama/Qwen shapes (config values written out here so that no
download is needed); every row is built lazily, so planning a 70B model allocates nothing.
"""

from __future__ import annotations

from typing import Any, Dict, List

from cherry_mlx.models.memory import (
    GIB,
    Plan,
    config_shape,
    plan_serving,
    plan_training,
)

MACHINES_GB = (24, 64, 128)
USABLE = 0.75  # of physical memory: macOS lets the GPU wire about this much; leave the OS room


def _llama(D, L, F, H, KV, V, tie, hd=None) -> Dict[str, Any]:
    return {
        "model_type": "llama", "hidden_size": D, "num_hidden_layers": L, "intermediate_size": F,
        "num_attention_heads": H, "num_key_value_heads": KV, "vocab_size": V,
        "tie_word_embeddings": tie, "head_dim": hd or D // H, "rms_norm_eps": 1e-5,
    }  # fmt: skip


COMMON = {  # name -> config (public shapes)
    "SmolLM2-135M": _llama(576, 30, 1536, 9, 3, 49152, True),
    "Llama-3.2-1B": _llama(2048, 16, 8192, 32, 8, 128256, True),
    "Llama-3.2-3B": _llama(3072, 28, 8192, 24, 8, 128256, True),
    "Llama-3.1-8B": _llama(4096, 32, 14336, 32, 8, 128256, False),
    "Qwen2.5-14B": _llama(5120, 48, 13824, 40, 8, 152064, False),
    "Qwen2.5-32B": _llama(5120, 64, 27648, 40, 8, 152064, False),
    "Llama-3.1-70B": _llama(8192, 80, 28672, 64, 8, 128256, False),
}
PRESETS = ("cherry-tiny", "cherry-48l", "cherry-1.8b")
# the table's fixed settings, so rows compare: one 2,048-token sequence per step
TABLE_TRAIN = dict(batch=1, seq=2048, checkpoint=True)
TABLE_CONTEXT = 4096


def _gib(b: float) -> str:
    return f"{b / GIB:,.2f} GiB"


def format_plan(train: Plan, serve: Plan) -> str:
    t, v = train.settings, serve.settings
    ck = "gradient checkpointing" if t["grad_checkpoint"] else "no checkpointing"
    lines = [
        "",
        f"memory plan, training (batch {t['batch_size']} x {t['seq_len']} tokens, "
        f"{t['optimizer']}, {ck}, {t['dtype']}):",
    ]
    lines += [f"  {k:<30}{_gib(b):>14}" for k, b in train.rows.items()]
    lines += [f"  {n}" for n in train.notes]
    lines.append(f"predicted training peak: {_gib(train.peak)} (MLX's allocation; resident memory "
                 "measured within 5% of it)")  # fmt: skip
    lines.append(
        f"memory plan, serving ({v['quant']}, {v['batch_size']} x {v['context']:,}-token context):"
    )
    lines += [f"  {k:<30}{_gib(b):>14}" for k, b in serve.rows.items()]
    lines += [f"  {n}" for n in serve.notes]
    lines.append(f"predicted serving peak: {_gib(serve.peak)}")
    return "\n".join(lines)


def smallest_fit(peak: float) -> str:
    for gb in MACHINES_GB:
        if peak <= USABLE * gb * 1e9:
            return f"{gb} GB"
    return "none"


def fits_rows(device: str, presets: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per model: parameters and the predicted peaks of full training (AdamW), LoRA training,
    bf16 and NVFP4 serving, with the smallest of 24/64/128 GB that holds each."""
    rows = []
    for name, cfg in {**presets, **COMMON}.items():
        full = config_shape(cfg)
        lora = config_shape(cfg, lora=True)
        b, sq, ck = TABLE_TRAIN["batch"], TABLE_TRAIN["seq"], TABLE_TRAIN["checkpoint"]
        row = {"model": name, "params": full.params}
        row["train full"] = plan_training(full, b, sq, ck, "adamw", device=device).peak
        row["train full adafactor"] = plan_training(
            full, b, sq, ck, "adafactor", device=device
        ).peak
        row["train lora"] = plan_training(lora, b, sq, ck, "adamw", device=device).peak
        for fmt in ("bf16", "nvfp4"):
            row[f"serve {fmt}"] = plan_serving(full, 1, TABLE_CONTEXT, fmt, device=device).peak
        rows.append(row)
    return rows


def format_fits(rows: List[Dict[str, Any]], device: str) -> str:
    cols = ["train full", "train full adafactor", "train lora", "serve bf16", "serve nvfp4"]
    lines = [
        "",
        f"what fits ({device}; training 1 x {TABLE_TRAIN['seq']:,} tokens with checkpointing, "
        f"serving {TABLE_CONTEXT:,}-token context; predicted peak -> smallest of "
        f"{'/'.join(map(str, MACHINES_GB))} GB holding it at {USABLE:.0%}):",
        f"  {'model':<15}{'params':>9}" + "".join(f"{c:>24}" for c in cols),
    ]
    for r in rows:
        cells = "".join(f"{f'{r[c] / GIB:,.1f} GiB -> {smallest_fit(r[c])}':>24}" for c in cols)
        lines.append(f"  {r['model']:<15}{r['params'] / 1e9:>8.2f}B{cells}")
    return "\n".join(lines)
