"""The committed reproduction in the docs, generated from its ``results.json`` and nothing else.

Two generated pieces keep prose and measurements from drifting apart:

- ``docs/NAME.md``: a hand-written preamble (how the run was made) above the marker line
  ``MARK``, and below it the report ``render_report`` makes of ``docs/NAME/results.json``
  (verdicts derived again by the current rule; plots written beside the results);
- README's SmolLM2 summary between ``BEGIN`` and ``END``: the budget, the wall time and a selection
  of the claim rows, with the few figures the prose around it needs.

``refresh_doc`` and ``refresh_readme`` rewrite them; the tests compare the committed files with
what these functions make of the committed results, so a number edited by hand fails CI.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List, Tuple

from cherry_mlx.pipelines.config import BUDGETS, ReproConfig
from cherry_mlx.pipelines.report import (
    cell,
    derive_rows,
    finite,
    mean,
    read_json,
    render_report,
    write_json,
)
from cherry_mlx.pipelines.stage import stages

MARK = "<!-- repro:report: everything below is generated from the results.json beside this file -->"
BEGIN = "<!-- repro:begin: generated from docs/repro-smollm2/results.json (pipelines/docs.py) -->"
END = "<!-- repro:end -->"
RESULTS = Path("docs") / "repro-smollm2" / "results.json"

# the paper's SGT budget: 500 steps of 16 sequences (4 × 4 accumulated) of 2,048 tokens
PAPER_STEPS, PAPER_TOKENS = 500, 500 * 16 * 2048

# README rows: (stage, text the claim starts with)
README_ROWS: Tuple[Tuple[str, str], ...] = (
    ("sgt", "full-sequence reaches lower"),
    ("sgt", "ROI = R"),
    ("sgt", "share reading"),
    ("sgt", "W = ΔL_nonGT"),
    ("sgt", "γ̄ > 0 at the source"),
    ("sgt", "one GT-only step"),
    ("sgt", "γ̄ on shuffled text"),
    ("sgt", "SGT held-out loss < random"),
    ("sgt", "SGT held-out loss < loss"),
    ("sgt", "SGT held-out loss < rho1"),
    ("compress", ""),
    ("mtp", "self-speculative"),
    ("mtp", "adaptive drafting"),
    ("quant", "nvfp4:"),
    ("quant", "nvfp4+awq embed affine8"),
    ("quant", "affine8"),
    ("moee", ""),
)


def load(results: Path) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(stage results with rows derived again, the rest of the file: key, started)."""
    data = read_json(results)
    stage_res = derive_rows(data["stages"], list(stages()))
    return stage_res, {k: v for k, v in data.items() if k != "stages"}


def doc_text(doc: Path, write_plots: Path | None = None) -> str:
    """``doc`` with everything below ``MARK`` generated from ``doc``'s results (``docs/NAME.md``
    -> ``docs/NAME/results.json``); plots go to ``write_plots`` (default: beside the results)."""
    doc = Path(doc)
    folder = doc.with_suffix("")
    text = doc.read_text()
    if MARK not in text:
        raise ValueError(f"{doc}: no line {MARK!r} to put the generated report under")
    results, manifest = load(folder / "results.json")
    key = manifest["key"]
    cfg = ReproConfig(model=key["model"], budget=key["budget"])
    plots = Path(write_plots) if write_plots else folder
    report = render_report(cfg, manifest, results, plots, image_prefix=f"{folder.name}/")
    return text[: text.index(MARK) + len(MARK)] + "\n\n" + report


def refresh_doc(doc: Path) -> None:
    """Rewrite ``doc``'s generated part, its plots, and its results.json (strict JSON, rows
    derived again)."""
    doc = Path(doc)
    results = doc.with_suffix("") / "results.json"
    stage_res, manifest = load(results)
    write_json(results, {**manifest, "stages": stage_res})
    doc.write_text(doc_text(doc))


def _rows(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    out = []
    for stage, start in README_ROWS:
        for r in (results.get(stage) or {}).get("rows", []):
            if r["claim"].startswith(start) and {**r, "stage": stage} not in out:
                out.append({**r, "stage": stage})
    return out


def stage_budget(results: Dict[str, Any], name: str, key: Dict[str, Any]) -> Dict[str, Any]:
    """The budget a stage ran with: as it recorded it, or (older results) the directory's budget
    with the stage's ``--set`` (else the directory's) applied."""
    res = results.get(name) or {}
    if "budget" in res:
        return res["budget"]
    base = {k: v for k, v in asdict(BUDGETS[key["budget"]]).items() if k != "name"}
    return {**base, **(res.get("set") or key.get("set") or {})}


def _budget(results: Dict[str, Any], key: Dict[str, Any]) -> str:
    b = stage_budget(results, "sgt", key)
    h = stage_budget(results, "compress", key)
    mtp = stage_budget(results, "mtp", key)
    moee = stage_budget(results, "moee", key)
    tokens = b["steps"] * b["batch_size"] * b["seq_len"]
    hours = sum(finite([r.get("seconds") for r in results.values()])) / 3600
    seeds = ", ".join(f"{st.name} {_seeds(results[st.name])}" for st in stages()
                      if st.name in results)  # fmt: skip
    return (
        f"SGT arms: {b['steps']} steps of {b['batch_size']} × {b['seq_len']} tokens "
        f"({tokens:,} tokens: 1/{PAPER_STEPS / b['steps']:.0f} of the paper's {PAPER_STEPS} steps "
        f"and 1/{PAPER_TOKENS / tokens:,.0f} of its {PAPER_TOKENS / 1e6:.1f}M tokens); healing "
        f"{h['pre_unroll_steps']} + {h['heal_steps']} steps; MTP heads {mtp['mtp_steps']} steps "
        f"of {mtp['batch_size']} × {mtp['seq_len']} tokens; MoEE S = {moee['moee_steps']}. Seeds "
        f"per stage: {seeds}. Wall time: {hours:.2f} h (the recorded stages' seconds summed; "
        "runs replaced by `--redo` not counted)."
    )


def _seeds(res: Dict[str, Any]) -> str:
    n = res.get("n_seeds") or len(res.get("seeds") or [])
    return str(n) if n else "1 run"


def _forgetting(sgt: Dict[str, Any]) -> str:
    """Prose perplexity per arm, and which arm moved each language most."""
    if not all(lang in sgt["baseline"] for lang in ("en", "ko")):
        return "Prose perplexity: not measured (no prose sets)."
    ppl = {"source": {lang: sgt["baseline"][lang]["ppl"] for lang in ("en", "ko")}}
    for arm, rows in sgt["arms"].items():
        ppl[arm] = {lang: mean([r["eval"].get(lang, {}).get("ppl") for r in rows])
                    for lang in ("en", "ko")}  # fmt: skip
    arms = [a for a in ppl if a not in ("source", "shuffled")]
    most = {lang: max(arms, key=lambda a: ppl[a][lang]) for lang in ("en", "ko")}
    cells = ", ".join(f"{a} {ppl[a]['en']:.1f} / {ppl[a]['ko']:.1f}" for a in ppl)
    return (
        f"Prose perplexity after training, English / Korean: {cells}. Every arm raises both; "
        f"among the coherent arms the {most['en']} arm raises English most and the "
        f"{most['ko']} arm Korean."
    )


def _coupling(sgt: Dict[str, Any]) -> str:
    c = sgt["coupling"]
    per = finite(c["init"]["per_batch"])
    shuf = finite(c["init_shuffled"]["per_batch"])
    if not per:
        return "γ̄ at the source: not measured."
    signs = "opposite signs" if min(per) < 0 < max(per) else "one sign"
    return (
        f"γ̄ per held-out batch at the source: {', '.join(f'{g:.4f}' for g in per)} "
        f"({signs}: no evidence yet that the coupling is positive); on token-shuffled text "
        f"{', '.join(f'{g:.4f}' for g in shuf)}, larger where Corollary 5 predicts ≈ 0 "
        f"(mean {mean(shuf):.3g} vs {mean(per):.3g}): this run points against it, inconclusively."
        if mean(shuf) > mean(per)
        else f"γ̄ per held-out batch at the source: {', '.join(f'{g:.4f}' for g in per)} "
        f"({signs}); on token-shuffled text {', '.join(f'{g:.4f}' for g in shuf)}."
    )


def readme_block(results: Dict[str, Any], key: Dict[str, Any]) -> str:
    """The README's generated summary of the committed SmolLM2 reproduction."""
    lines = [BEGIN, _budget(results, key), ""]
    lines += [
        "| stage | claim | paper | ours | control | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in _rows(results):
        cells = [r["stage"], r["claim"], r["paper"], r["ours"], r["control"] or "-",
                 f"**{r['verdict']}**"]  # fmt: skip
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
    if "sgt" in results:
        lines += ["", _forgetting(results["sgt"]), "", _coupling(results["sgt"])]
    plain = [t for d in results.get("mtp", {}).get("decode", []) for t in d["plain_tps"]]
    plain += [m["decode_tps"] for m in results.get("quant", {}).get("modes", [])
              if m["mode"] == "fp32"]  # fmt: skip
    if plain:
        lines += ["", f"SmolLM2-135M fp32 plain greedy decode in this run: "
                  f"{min(plain):.1f}-{max(plain):.1f} tok/s (the MTP stage's repetitions and the "
                  "quantisation stage's fp32 row, 2-core CPU)."]  # fmt: skip
    lines.append(END)
    return "\n".join(lines)


def readme_text(readme: Path, results_path: Path) -> str:
    """``readme`` with its block between ``BEGIN`` and ``END`` generated from ``results_path``."""
    text = Path(readme).read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme}: no {BEGIN!r} ... {END!r} block to rewrite")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    results, manifest = load(results_path)
    return head + readme_block(results, manifest["key"]) + tail


def refresh_readme(readme: Path, results_path: Path = RESULTS) -> None:
    Path(readme).write_text(readme_text(readme, results_path))
