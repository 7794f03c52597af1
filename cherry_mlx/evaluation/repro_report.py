"""``report.md`` and PNG plots of a ``repro`` directory, written from its stage JSON alone.

The first table lists every claim: the paper's number, ours (mean ± sd over seeds, batches or
repetitions, as the "spread" column says), the control the paper lacks, and the verdict of the
rule in ``verdict.py``. Per-stage tables follow with the raw numbers behind the rows.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List

from cherry_mlx.evaluation.repro_compress import ppl_table
from cherry_mlx.evaluation.repro_config import BUDGETS, STAGES, ReproConfig
from cherry_mlx.evaluation.repro_sgt import ARMS
from cherry_mlx.evaluation.verdict import RULE

TITLES = {
    "sgt": "1. SGT on the source model (Table 4, Theorem 3, Corollary 5, Limitation 9)",
    "compress": "2. Depth compression (Tables 5, C.1, C.2) and pruning baselines",
    "mtp": "3. Self-speculative MTP decoding",
    "quant": "4. Quantisation",
    "moee": "5. MoEE (Table 7)",
}


def _f(x, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{nd}g}" if isinstance(x, float) else str(x)


def cell(text) -> str:
    """A markdown table cell: a literal '|' (as in |G|/|T|) must not split the row."""
    return str(text).replace("|", "\\|")


def _mean(xs) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return sum(xs) / len(xs) if xs else math.nan


def verdict_table(results: Dict[str, Any]) -> List[str]:
    lines = [
        "| stage | paper | claim | paper's number | ours | control | spread | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for stage in STAGES:
        for r in (results.get(stage) or {}).get("rows", []):
            cells = [stage, r["table"], r["claim"], r["paper"], r["ours"], r["control"] or "-",
                     r["spread"], f"**{r['verdict']}**"]  # fmt: skip
            lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return lines


def sgt_section(res: Dict[str, Any]) -> List[str]:
    lines = [
        f"{res['steps']} steps per arm, seeds {res['seeds']}; |G|/|T| = {res['gt_fraction']:.3f}."
        " Held-out chat loss (response tokens), prose perplexity; means over seeds.",
        "",
        "| arm | total | GT | non-GT | en ppl | ko ppl | W | W̃ | R | ROI | R_share | ROI_share |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    base = res["baseline"]
    lines.append(
        f"| source | {_f(base['chat']['total'])} | {_f(base['chat']['gt'])} | "
        f"{_f(base['chat']['non_gt'])} | {_f(base.get('en', {}).get('ppl'))} | "
        f"{_f(base.get('ko', {}).get('ppl'))} | | | | | | |"
    )
    for arm in ARMS:
        rows, mets = res["arms"].get(arm, []), res["metrics"].get(arm, [])

        def m(key):
            return _f(_mean([x["eval"]["chat"][key] for x in rows]))

        def p(lang):
            return _f(_mean([x["eval"].get(lang, {}).get("ppl", math.nan) for x in rows]))

        def w(key):
            return _f(_mean([x[key] for x in mets]))

        lines.append(
            f"| {arm} | {m('total')} | {m('gt')} | {m('non_gt')} | {p('en')} | {p('ko')} | "
            f"{w('W')} | {w('W_norm')} | {w('R')} | {w('ROI')} | {w('R_share')} | "
            f"{w('ROI_share')} |"
        )
    c = res["coupling"]
    mids = [r["coupling_mid"]["mean"] for r in res["arms"]["sgt"] if r.get("coupling_mid")]
    ends = [r["coupling_end"]["mean"] for r in res["arms"]["sgt"]]
    lines += [
        "",
        f"γ̄: source {_f(c['init']['mean'])} (shuffled text {_f(c['init_shuffled']['mean'])}), "
        f"halfway through SGT {_f(_mean(mids))}, after SGT {_f(_mean(ends))}. Theorem 3 steps "
        "(η, actual/predicted ΔL_nonGT): "
        + ", ".join(f"({k['eta']:.2g}, {_f(k['ratio'])})" for k in c["init"]["pooled"]["checks"]),
        "The shuffled arm's W, R and ROI are measured on shuffled held-out text.",
    ]
    return lines


def compress_section(res: Dict[str, Any]) -> List[str]:
    lines = [
        f"Source depth {res['depth']}, seeds {res['seeds']}; means over seeds.",
        "",
        "| model | merged loss | healed loss | recovered | eff. depth | params | chat ppl | en ppl "
        "| ko ppl |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    ppl = {label: (c, e, k) for label, c, e, k in ppl_table(res)}
    src = ppl["source"]
    lines.append(f"| source | | {_f(res['source']['chat']['total'])} | | {res['depth']} | | "
                 f"{_f(src[0])} | {_f(src[1])} | {_f(src[2])} |")  # fmt: skip
    for label in dict.fromkeys(a["label"] for a in res["arms"]):
        arms = [a for a in res["arms"] if a["label"] == label]
        c, e, k = ppl[label]
        lines.append(
            f"| {label} | {_f(_mean([a['merged'] for a in arms]))} | "
            f"{_f(_mean([a['healed'] for a in arms]))} | "
            f"{_f(_mean([a['recovered'] for a in arms]))} | {arms[0]['effective_depth']} | "
            f"{arms[0]['params'] / 1e6:.2f}M | {_f(c)} | {_f(e)} | {_f(k)} |"
        )
    ctrl = _mean([c["loss"] for c in res["control"]])
    lines.append(f"| source + same SGT steps (control) | | {_f(ctrl)} | | {res['depth']} | | | | |")
    kept = {a["label"]: a["kept"] for a in res["arms"] if a["method"] != "average"}
    if kept:
        lines += ["", "Layers kept by pruning (seed 0): "
                  + "; ".join(f"{k}: {[g[0] for g in v]}" for k, v in kept.items())]  # fmt: skip
    return lines


def mtp_section(res: Dict[str, Any]) -> List[str]:
    acc = res["accuracy"]
    lines = [
        f"{res['heads']} heads, {res['steps']} steps on the frozen trunk (the trunk's greedy "
        f"tokens as targets, draft vocabulary {res.get('draft_vocab') or 'full'}). Held-out "
        f"top-1: trunk {_f(acc['trunk'])}, heads {[round(a, 3) for a in acc['heads']]}, "
        f"agreement with the trunk {[round(a, 3) for a in acc['agree']]}.",
        "",
        "Speculative rows draft adaptively with up to K heads (one controller across the prompts).",
        "",
        "| K | plain tok/s | speculative tok/s | speedup | tok/pass | P(≥j accepted) | identical |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for d in res["decode"]:
        lines.append(
            f"| {d['k']} | {_f(_mean(d['plain_tps']))} | {_f(_mean(d['spec_tps']))} | "
            f"{_f(_mean(d['speedup']))} | {_f(d['tokens_per_pass'])} | "
            f"{', '.join(f'{a:.2f}' for a in d['accept_at_least'])} | {d['identical']} |"
        )
    return lines


def quant_section(res: Dict[str, Any]) -> List[str]:
    lines = [
        "| mode | chat ppl | en ppl | bits/weight | MiB | decode tok/s | prefill tok/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in res["modes"]:
        lines.append(
            f"| {m['mode']} | {_f(m['chat_ppl'])} | {_f(m['en_ppl'])} | "
            f"{m['bits_per_weight']:.2f} | {m['mib']:.2f} | {_f(m['decode_tps'])} | "
            f"{_f(m['prefill_tps'])} |"
        )
    return lines


def moee_section(res: Dict[str, Any]) -> List[str]:
    lines = [
        f"S = {res['steps']}: experts S steps each + S fused steps; singles 3S steps.",
        "",
        "| model | chat loss | en ppl | ko ppl | FLOPs/token | active params |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, label in (("moee", "MoEE top-1"), ("single", "single merged"),
                       ("looped", "single merged ×2")):  # fmt: skip
        rows = res[key]
        if not rows:
            continue
        cost = rows[0]["cost"]
        lines.append(
            f"| {label} | {_f(_mean([r['eval']['chat']['total'] for r in rows]))} | "
            f"{_f(_mean([r['eval'].get('en', {}).get('ppl', math.nan) for r in rows]))} | "
            f"{_f(_mean([r['eval'].get('ko', {}).get('ppl', math.nan) for r in rows]))} | "
            f"{cost['flops_per_token'] / 1e6:.2f}M | {cost['active_params'] / 1e6:.2f}M |"
        )
    return lines


SECTIONS = {
    "sgt": sgt_section,
    "compress": compress_section,
    "mtp": mtp_section,
    "quant": quant_section,
    "moee": moee_section,
}


def write_report(out: Path, cfg: ReproConfig, manifest: Dict, results: Dict[str, Any]) -> Path:
    """``out/report.md`` and one PNG per stage that ran."""
    out = Path(out)
    src = results.get("source")
    lines = [
        f"# cherry-mlx repro: {cfg.model}, budget {cfg.budget}",
        "",
        f"Budget {cfg.budget}: "
        + ", ".join(f"{k} {v}" for k, v in asdict(BUDGETS[cfg.budget]).items() if k != "name")
        + "; each stage's `--set` overrides are in the table below.",
        "",
        f"Started {manifest.get('started')}, report {time.strftime('%Y-%m-%d %H:%M:%S')}; "
        "seeds per arm and `--set` overrides per stage in the table below. Source: "
        + (
            f"trained from scratch for {src['steps']} full-loss steps."
            if src
            else "MODEL as given."
        ),
        f"Verdict rule: {RULE}; fewer than 2 values (no spread) is inconclusive, except "
        "deterministic measurements (spread 'exact'), compared directly.",
        "",
        "| stage | seconds | seeds | `--set` |",
        "| --- | --- | --- | --- |",
    ]
    key = manifest.get("key", {})
    for stage in ("source", *STAGES):
        if stage in results:
            res = results[stage]
            over = res.get("set", key.get("set")) if stage != "source" else None
            over = ",".join(f"{k}={v}" for k, v in over.items()) if over else "-"
            seeds = res.get("n_seeds", key.get("seeds")) if stage != "source" else "-"
            lines.append(f"| {stage} | {res.get('seconds', 0):.0f} | {seeds} | {over} |")
    lines += ["", "## Verdicts", ""] + verdict_table(results)
    for stage in STAGES:
        lines += ["", f"## {TITLES[stage]}", ""]
        if stage not in results:
            lines.append("not run (excluded by --only, or not finished yet)")
            continue
        lines += SECTIONS[stage](results[stage])
        png = plot_stage(stage, results[stage], out / f"{stage}.png")
        lines += ["", f"![{stage}]({png.name})"]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_stage(stage: str, res: Dict[str, Any], path: Path) -> Path:
    """One bar chart per stage: the quantity its main claim is about."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if stage == "sgt":
        labels = list(res["arms"])
        vals = [[r["eval"]["chat"]["total"] for r in res["arms"][a]] for a in labels]
        ylabel = "held-out chat loss"
    elif stage == "compress":
        labels = list(dict.fromkeys(a["label"] for a in res["arms"]))
        vals = [[a["healed"] for a in res["arms"] if a["label"] == lab] for lab in labels]
        labels, vals = labels + ["control"], vals + [[c["loss"] for c in res["control"]]]
        ylabel = "held-out loss after healing"
    elif stage == "mtp":
        labels = [f"K={d['k']}" for d in res["decode"]]
        vals = [d["speedup"] for d in res["decode"]]
        ylabel = "speedup over plain greedy"
    elif stage == "quant":
        labels = [m["mode"] for m in res["modes"]]
        vals = [[m["chat_ppl"]] for m in res["modes"]]
        ylabel = "held-out chat perplexity"
    else:
        labels = ["MoEE", "single", "single ×2"]
        vals = [[r["eval"]["chat"]["total"] for r in res[k]] for k in ("moee", "single", "looped")]
        ylabel = "held-out chat loss"
    means = [_mean(v) for v in vals]
    errs = [_sd(v) for v in vals]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(range(len(labels)), means, yerr=errs, color="#c0392b", alpha=0.8, capsize=3)
    ax.set_xticks(range(len(labels)), labels, fontsize=8, rotation=20)
    ax.set_ylabel(ylabel)
    ax.set_title(TITLES[stage], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _sd(xs) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if len(xs) < 2:
        return 0.0
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
