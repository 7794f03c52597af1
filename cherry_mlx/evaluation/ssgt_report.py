"""Presenting the SSGT evaluation: terminal table, JSON, bar chart; and the command's one call."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict

from cherry_mlx.data.paths import ssgt_prompts_path
from cherry_mlx.decoding.session import default_model, load_for_serving
from cherry_mlx.evaluation.ssgt_eval import METRICS, SSGTEvalConfig, evaluate, load_prompts


def _cell(r: Dict) -> str:
    if r["rate"] is None:
        return "    -" + " " * 14 + "0/0"
    lo, hi = r["ci95"]
    return f"{100 * r['rate']:5.1f}% [{100 * lo:4.1f},{100 * hi:5.1f}] {r['k']}/{r['n']}"


def format_table(report: Dict) -> str:
    """Rates with 95% Wilson intervals and counts: one row per metric, columns all/ko/en."""
    langs = list(report["by_lang"])
    cols = ["all"] + langs
    width = 28
    head = (f"{'metric':<31}" + "".join(f"{c:<{width}}" for c in cols)).rstrip()
    lines = [head, "-" * (31 + width * len(cols))]
    for m in METRICS:
        arrow = "↑" if m.better == "higher" else "↓"
        cells = [report["overall"][m.name]] + [report["by_lang"][lg][m.name] for lg in langs]
        lines.append(
            f"{m.name + ' ' + arrow:<31}" + "".join(f"{_cell(c):<{width}}" for c in cells).rstrip()
        )
    g = report["generation"]
    kinds = ", ".join(f"{k} {sum(v.values())}" for k, v in report["counts"].items())
    lines.append(
        f"{report['prompts']} prompts ({kinds}), "
        f"{g['tokens']} tokens at {g['tok_per_s']} tok/s, {g['hit_max_tokens']} hit "
        f"--max-tokens {report['max_tokens']}; rate [95% Wilson CI] k/n"
    )
    return "\n".join(lines)


def examples(report: Dict, per_kind: int = 1, chars: int = 160) -> str:
    """The first ``per_kind`` responses of each kind, shortened, for a look at what was judged."""
    out, seen = [], {}
    for r in report["responses"]:
        if seen.get(r["kind"], 0) >= per_kind:
            continue
        seen[r["kind"]] = seen.get(r["kind"], 0) + 1
        text = (r["prefix"] + " ▸ " if r["prefix"] else "▸ ") + r["response"]
        text = text.replace("\n", " ")
        text = text if len(text) <= chars else text[:chars] + "…"
        out.append(f"[{r['kind']}/{r['lang']}] {text}\n    flags: {r['flags']}")
    return "\n".join(out)


def plot(report: Dict, path) -> None:
    """Horizontal bars per metric (all, per language) with 95% Wilson error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [("all", report["overall"])] + list(report["by_lang"].items())
    names = [m.name for m in METRICS]
    fig, ax = plt.subplots(figsize=(8, 0.25 * len(names) * len(groups) + 1.5))
    h = 0.8 / len(groups)
    for j, (label, table) in enumerate(groups):
        ys, xs, err = [], [], [[], []]
        for i, name in enumerate(names):
            r = table[name]
            if r["rate"] is None:
                continue
            ys.append(i + j * h)
            xs.append(100 * r["rate"])
            err[0].append(max(0.0, 100 * (r["rate"] - r["ci95"][0])))  # >= 0 despite rounding
            err[1].append(max(0.0, 100 * (r["ci95"][1] - r["rate"])))
        ax.barh(ys, xs, height=h, xerr=err, capsize=2, label=label)
    ax.set_yticks([i + 0.4 - h / 2 for i in range(len(names))], names)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("rate (%) with 95% Wilson interval")
    ax.set_title(f"SSGT moments: {report.get('model', '')}", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_json(report: Dict, out) -> Path:
    """Write the report atomically; a bar chart goes beside it (same name, ``.png``)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, out)
    plot(report, out.with_suffix(".png"))
    return out


def run_ssgt_eval(cfg: SSGTEvalConfig, echo=print) -> Dict:
    """``cherry-mlx ssgt-eval``: load ``cfg.model`` (default: the latest run), evaluate, print,
    save."""

    load_prompts(cfg.prompts or ssgt_prompts_path())  # bad prompts fail before the model loads
    name = cfg.model or default_model()
    model_obj, tokenizer = load_for_serving(name)
    report = {"model": str(name), **evaluate(model_obj, tokenizer, cfg, progress=echo)}
    if cfg.show:
        echo(examples(report, cfg.show))
    echo(format_table(report))
    if cfg.json_out:
        path = write_json(report, cfg.json_out)
        echo(f"wrote {path} and {path.with_suffix('.png')}")
    return report
