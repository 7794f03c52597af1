"""Write docs/compression.md and docs/compression.png from bench/compress_heal.py's results.

python bench/compression_report.py [--results bench/results/compress_heal.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {15: 0.5, 6: 1.2}  # nats above the source's held-out prose loss
BATTERY_PATTERNS = [
    ("What is the capital of France?", r"\bparis\b"),
    ("How many days are there in a week?", r"\bseven\b|\b7\b"),
    ("What is the largest planet in our solar system?", r"\bjupiter\b"),
    ("Who wrote Romeo and Juliet?", r"shakespeare"),
    ("What is the chemical formula of water?", r"\bh2o\b|h₂o"),
    ("How many legs does a spider have?", r"\beight\b|\b8\b"),
    ("At what temperature in Celsius does water freeze?", r"(?<![\d.-])0(\.0)?\s*°?\s*c\b|zero"),
    ("What is the capital of Japan?", r"\btokyo\b"),
    ("Which gas do plants absorb from the air?", r"carbon dioxide|\bco2\b|co₂"),
    ("What is the closest star to Earth?", r"\bsun\b"),
]


def scored(answers):
    """Whether each battery answer matches its pattern (rescored from the stored answers, so a
    stricter pattern applies to old results too)."""
    import re

    return [bool(re.search(p, a.lower())) for a, (_, p) in zip(answers, BATTERY_PATTERNS)]


def rescored(results):
    """Every stored battery answer scored by the one current rule (old results included)."""
    for row in results["stages"].values():
        row["battery"]["right"] = scored(row["battery"]["answers"])
        row["battery"]["score"] = sum(row["battery"]["right"])
    return results


def _ms(values):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def arms(results):
    """{arm: [rows of each seed]} in the bench's order."""
    out = {}
    for key, row in results["stages"].items():
        if key != "source":
            out.setdefault(row["arm"], []).append(row)
    return out


def table(results, src):
    lines = [
        "| arm | unique × loops (effective) | seeds | held-out prose | Δ vs source | chat valid "
        "| battery (of the source's) | local s | end-to-end s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    src_right = src["battery"]["right"]
    for arm, rows in arms(results).items():
        r0 = rows[0]
        prose = [r["final"]["prose"] for r in rows]
        delta = [p - src["final"]["prose"] for p in prose]
        kept = [sum(a and b for a, b in zip(r["battery"]["right"], src_right)) for r in rows]
        local = [r.get("local_seconds", 0.0) for r in rows]
        e2e = [r["e2e_seconds"] for r in rows]
        lines.append(
            f"| {arm} | {r0['unique']} × {r0['loops']} ({r0['effective_depth']}) | {len(rows)} "
            f"| {_ms(prose)} | {_ms(delta)} | {_ms([r['final']['chat'] for r in rows])} "
            f"| {'/'.join(str(k) for k in kept)} of {sum(src_right)} "
            f"| {statistics.mean(local):.0f} | {statistics.mean(e2e):.0f} |"
        )
    return "\n".join(lines)


def verdicts(results, src):
    out = []
    base = src["final"]["prose"]
    by_arm = arms(results)
    for unique, allowed in TARGETS.items():
        cands = {a: statistics.mean(r["final"]["prose"] for r in rows)
                 for a, rows in by_arm.items() if rows[0]["unique"] == unique
                 and (unique != 6 or rows[0]["loops"] == 8)}  # fmt: skip
        if not cands:
            out.append(f"- {unique}L target (+{allowed} nats): not measured yet.")
            continue
        best = min(cands, key=cands.get)
        gap = cands[best] - base
        ok = "met" if gap <= allowed else "missed"
        label = "30 → 15 layers" if unique == 15 else "6L × 8"
        out.append(f"- {label}: best arm **{best}**, {cands[best]:.3f} = source + {gap:.3f} "
                   f"nats (target + {allowed}): **{ok}**.")  # fmt: skip
    looped = {a: r for a, r in by_arm.items() if r[0]["unique"] == 6 and r[0]["loops"] == 8}
    flat = {a: r for a, r in by_arm.items() if r[0]["unique"] == 6 and r[0]["loops"] == 1}
    for a, rows in looped.items():
        twin = next((f for f in flat if f.split("+")[0].split()[-1] == a.split("+")[0].split()[-1]),
                    None)  # fmt: skip
        if twin:
            lp = statistics.mean(r["final"]["prose"] for r in rows)
            fp = statistics.mean(r["final"]["prose"] for r in flat[twin])
            word = "beats" if lp < fp else "does not beat"
            out.append(f"- looping: {a} ({lp:.3f}) {word} the same 6 layers unlooped "
                       f"({twin}: {fp:.3f}), by {fp - lp:+.3f} nats.")  # fmt: skip
    return "\n".join(out)


def battery_table(results, src):
    qs = results.get("battery_questions") or []
    rows = arms(results)
    head = "| question | source | " + " | ".join(rows) + " |"
    lines = [head, "|" + "---|" * (2 + len(rows))]
    n = len(src["battery"]["answers"])
    for i in range(n):
        cells = [_short(src["battery"]["answers"][i], src["battery"]["right"][i])]
        cells += [_short(r[0]["battery"]["answers"][i], r[0]["battery"]["right"][i])
                  for r in rows.values()]  # fmt: skip
        q = qs[i] if i < len(qs) else str(i + 1)
        lines.append(f"| {q} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _short(text, right):
    t = " ".join(text.split())[:40].replace("|", "/")
    return f"{'✓' if right else '✗'} {t}"


def plot(results, src, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for arm, rows in arms(results).items():
        r = rows[0]
        e2e = [c for c in r["curve"] if c["stage"] == "e2e"]
        start = [c for c in r["curve"] if c["stage"] in ("built", "local")]
        xs = [0] + [c["tokens"] for c in e2e]
        ys = [start[-1]["prose"]] + [c["prose"] for c in e2e]
        (line,) = ax.plot(xs, ys, marker="o", ms=3, label=arm)
        if r.get("local"):  # where block-local healing started from
            ax.plot([0], [start[0]["prose"]], marker="x", color=line.get_color())
    ax.axhline(src["final"]["prose"], color="k", ls=":", label="source")
    ax.axhline(src["final"]["prose"] + 0.5, color="g", ls="--", lw=0.8, label="source + 0.5")
    ax.axhline(src["final"]["prose"] + 1.2, color="r", ls="--", lw=0.8, label="source + 1.2")
    ax.set_yscale("log")
    ax.set_xlabel("end-to-end healing tokens (x: before block-local healing)")
    ax.set_ylabel("held-out English prose loss (nats)")
    ax.set_title("SmolLM2-135M-Instruct, 30 layers, compressed and healed (seed 0)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def long_section(path: Path, out_png: Path) -> str:
    """The targets' budget: arms healed far longer than the equal-compute table (same cache,
    same held-out sets), with their own curve and battery."""
    if not path.is_file():
        return ""
    res = rescored(json.loads(path.read_text()))
    src = res["stages"]["source"]
    b = res["budget"]
    plot(res, src, out_png)
    walls = []
    for arm, rows in arms(res).items():
        r = rows[0]
        walls.append(f"{arm}: local {r.get('local_seconds', 0) / 60:.1f} min + end-to-end "
                     f"{r['e2e_seconds'] / 60:.1f} min (evaluations included)")  # fmt: skip
    return f"""
## Longer healing: the targets' budget (from `{path.name}`)

Same teacher cache and held-out sets; {b["local_steps"]} block-local steps of {2 * b["batch"]}
rows at lr {b["local_lr"]}, then {b["kd_steps"]} end-to-end distillation steps × {b["batch"]} rows
× {b["seq_len"]} tokens at lr {b["lr"]}, seed {b["seed"]}. Healing wall time (shared 2-core
machine; the teacher cache's build is not included): {"; ".join(walls)}.

{table(res, src)}

{verdicts(res, src)}

![held-out loss vs healing tokens, longer healing]({out_png.name})

### Factual battery at this budget

{battery_table(res, src)}
"""


def throughput_section(path: Path) -> str:
    """Teacher-cache throughput beside mlx-lm's batched generation (teacher_throughput.py)."""
    if not path.is_file():
        return ""
    res = json.loads(path.read_text())
    rows = "\n".join(f"| {r['batch']} | {r['cache_tok_s']:.0f} | {r['generate_tok_s']:.1f} |"
                     for r in res["rows"])  # fmt: skip
    return f"""
## Teacher-cache throughput (from `{path.name}`)

Tokens per second on SmolLM2-135M-Instruct, {res["seq_len"]}-token rows, one process, arms
alternating (shared 2-core machine: noisy). "cache": one teacher-forced forward with top-k and
log-sum-exp (what `teacher build` does per batch); "generate": mlx-lm's `batch_generate`, the
step `--origin generate` adds before caching.

| batch | cache tok/s | mlx-lm generate tok/s |
|---:|---:|---:|
{rows}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default=str(ROOT / "bench/results/compress_heal.json"))
    ap.add_argument("--long", default=str(ROOT / "bench/results/compress_heal_long.json"))
    ap.add_argument("--out", default=str(ROOT / "docs/compression.md"))
    args = ap.parse_args()
    results = rescored(json.loads(Path(args.results).read_text()))
    src = results["stages"]["source"]
    b, c, h = results["budget"], results["cache"], results["held_out"]
    png = Path(args.out).with_suffix(".png")
    plot(results, src, png)
    intro = (ROOT / "docs/compression_intro.md").read_text()
    text = f"""{intro}
## Results (generated by `bench/compression_report.py` from `{Path(args.results).name}`)

Source: SmolLM2-135M-Instruct (30 layers), held-out English prose loss
**{src["final"]["prose"]:.3f}**, chat valid loss {src["final"]["chat"]:.3f}, battery
{src["battery"]["score"]}/10. Held-out sets: {h["prose_tokens"]} prose tokens (bundled English
prose, valid split) and {h["chat_tokens"]} response tokens ({b["chat_examples"]} English
examples of the bundled chat valid split); neither is healed on.

Budget per arm (equal for every arm): {b["kd_steps"]} end-to-end steps × {b["batch"]} rows ×
{b["seq_len"]} tokens at lr {b["lr"]} (distillation: top-k KL at T = {b["temperature"]}; paper
arm: SGT cross-entropy, λ = {b["lam"]}, on the same rows); arms marked "local" add
{b["local_steps"]} block-local steps of {2 * b["batch"]} rows at lr {b["local_lr"]}. Teacher
cache: {c["rows"]} rows × {c["seq_len"]} tokens ({c["tokens"]} supervised tokens), k = {c["k"]},
every layer's hidden state. Seeds: {b["seed"]} (one seed unless the table says more). Wall
times measured on the shared 2-core machine while other jobs ran: noisy.

{table(results, src)}

At this (equal, tiny) budget:

{verdicts(results, src)}

![held-out loss vs healing tokens]({png.name})

### Factual battery (greedy, 24 tokens; ✓ = the expected answer appears)

{battery_table(results, src)}
"""
    text += throughput_section(ROOT / "bench/results/teacher_throughput.json")
    text += long_section(Path(args.long), png.with_name(png.stem + "_long.png"))
    notes = ROOT / "docs/compression_notes.md"
    if notes.is_file():
        text += "\n" + notes.read_text()
    Path(args.out).write_text(text)
    print(f"wrote {args.out} and {png}")


if __name__ == "__main__":
    main()
