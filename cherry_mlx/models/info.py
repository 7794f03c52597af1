"""Parameter and memory breakdown of a model, from its config alone.

The model is built lazily (MLX allocates an array only when it is evaluated), so even the 1.4B
``cherry-1.8b`` preset is described without allocating its weights.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict

from mlx.utils import tree_flatten

from cherry_mlx.models.gguf import gguf_config, gguf_source
from cherry_mlx.models.loading import build_model, load_config, resolve

# Bits per weight of each storage format for matrices (scales included); vectors stay 16-bit
# when quantised (MLX quantises Linear/Embedding weights only).
FORMATS = OrderedDict(
    [
        ("fp32", 32.0),
        ("bf16", 16.0),
        ("8-bit", 8 + 32 / 64),  # affine, group 64: fp16 scale + bias per group
        ("nvfp4", 4 + 8 / 16),  # E2M1 values, one E4M3 scale per 16 (+ one fp32 per tensor)
    ]
)


def component_of(name: str) -> str:
    """Which row of the breakdown a parameter name belongs to."""
    if name.startswith("mtp."):
        return "mtp heads"
    if "gate" in name.split(".")[0] or name.startswith("router"):
        return "gate"
    if name.startswith("fusion") or name.startswith("cabstractor"):
        return "fusion"
    if name.endswith("norm.weight") or "layernorm" in name or ".norm." in name:
        return "norms"
    if "embed_tokens" in name or name.startswith("lm_head"):
        return "embedding & lm head"  # one row, as in the paper's parameter table
    if ".layers." in name or name.startswith("layers."):
        return "backbone"
    return "other"


def count_parameters(model) -> Dict[str, int]:
    rows: Dict[str, int] = OrderedDict((k, 0) for k in ("backbone", "embedding & lm head", "norms"))
    for name, arr in tree_flatten(model.parameters()):
        key = component_of(name)
        rows[key] = rows.get(key, 0) + arr.size
    return rows


def weight_bytes(model) -> Dict[str, float]:
    out = {}
    params = tree_flatten(model.parameters())
    for fmt, bits in FORMATS.items():
        total = 0.0
        for _, arr in params:
            b = bits if (arr.ndim >= 2 or fmt in ("fp32", "bf16")) else 16.0
            total += arr.size * b / 8
        out[fmt] = total
    return out


def source_config(name_or_path: str):
    """(path, config) of a preset, folder, run or GGUF; reads only (a GGUF is not imported)."""
    src = gguf_source(name_or_path)
    if src is not None:
        return src, gguf_config(src)
    path = resolve(name_or_path)
    return path, load_config(path)


def describe(name_or_path: str) -> Dict[str, Any]:
    """The breakdown for a preset, folder, run or GGUF; reads only (a GGUF is not imported)."""
    path, config = source_config(name_or_path)
    model = build_model(config)  # lazy: nothing allocated
    rows = count_parameters(model)
    args = model.args
    report = {
        "model": str(name_or_path),
        "path": str(path),
        "parameters": dict(rows),
        "total": sum(rows.values()),
        "tied_embeddings": bool(args.tie_word_embeddings),
        "unique_layers": args.num_hidden_layers,
        "effective_depth": args.effective_depth,
        "recurrence": args.recurrence,
        "weight_bytes": weight_bytes(model),
    }
    experts = getattr(model, "experts", None)
    if experts and not args.num_hidden_layers:  # a whole-model MoEE: the layers are the experts'
        report["experts"] = [e.args.effective_depth for e in experts]
        report["unique_layers"] = sum(e.args.num_hidden_layers for e in experts)
        report["effective_depth"] = max(report["experts"])  # a token's path: one expert's stack
    return report


def _human(n: float) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:,.3f}{unit}"
    return f"{n:,.0f}"


def format_table(report: Dict[str, Any]) -> str:
    lines = [f"{report['model']}  ({report['path']})", ""]
    total = report["total"]
    lines.append(f"{'component':<20}{'parameters':>16}{'share':>9}")
    for key, n in report["parameters"].items():
        note = ""
        if key == "embedding & lm head":
            note = (
                "  (tied: one matrix)" if report["tied_embeddings"] else "  (untied: two matrices)"
            )
        lines.append(f"{key:<20}{n:>16,}{n / max(total, 1):>8.1%}{note}")
    lines.append(f"{'total':<20}{total:>16,}   ({_human(total)})")
    lines.append("")
    depth = f"effective depth {report['effective_depth']} ({report['unique_layers']} unique layers"
    if report.get("experts"):
        depth += f" in {len(report['experts'])} experts, each a whole model"
    if report["recurrence"]:
        r = report["recurrence"]
        depth += (
            f"; prelude {r['prelude']}, core {r['core']} x {r['loops']} loops, coda {r['coda']}"
        )
    lines.append(depth + ")")
    lines.append(
        "weight memory: "
        + ", ".join(f"{fmt} {b / 2**20:,.1f} MiB" for fmt, b in report["weight_bytes"].items())
    )
    return "\n".join(lines)


def show_info(cfg, log=print) -> Dict[str, Any]:
    """``cherry-mlx info``: print ``describe(cfg.model)``, the memory plan for the training and
    serving settings in ``cfg`` and what fits 24/64/128 GB, as tables (or JSON); return it."""
    import json

    from cherry_mlx.models.memory import config_shape, device_kind, plan_serving, plan_training
    from cherry_mlx.models.memory_fit import PRESETS, fits_rows, format_fits, format_plan

    checks = [
        ("--optimizer", cfg.optimizer, ("adamw", "adafactor", "sgd")),
        ("--device", cfg.device, ("auto", "cpu", "gpu")),
        ("--dtype", cfg.dtype, ("auto", "float32", "bfloat16", "float16")),
        ("--quant", cfg.quant, tuple(FORMATS)),
    ]
    for flag, value, known in checks:
        if value not in known:
            raise ValueError(f"{flag} {value!r}: use one of {', '.join(known)}")
    report = describe(cfg.model)
    config = source_config(cfg.model)[1]
    device = device_kind(cfg.device)
    shape = config_shape(config, cfg.mtp, cfg.lora, cfg.lora_rank, cfg.lora_layers)
    train = plan_training(
        shape, cfg.batch_size, cfg.seq_len, cfg.grad_checkpoint, cfg.optimizer, cfg.dtype, device
    )
    serve = plan_serving(config_shape(config, cfg.mtp), cfg.serve_batch, cfg.context, cfg.quant,
                         device=device)  # fmt: skip
    report["memory"] = {"train": train.to_dict(), "serve": serve.to_dict()}
    if cfg.fits:
        presets = {n: load_config(resolve(n)) for n in PRESETS}
        report["fits"] = fits_rows(device, presets)
    if cfg.json_out:
        log(json.dumps(report, indent=2))
    else:
        text = format_table(report) + "\n" + format_plan(train, serve)
        log(text + (format_fits(report["fits"], device) if cfg.fits else ""))
    return report
