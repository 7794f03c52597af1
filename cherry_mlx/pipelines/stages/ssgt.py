"""Stage of ``repro``: SSGT moments (Table 12) and SSGT retention (Table 11).

From the source, per seed, two arms train on the chat data's moment families (Atcha, Jamkkan,
guardrail and their benign look-alikes) for the same steps: SSGT (the mixed loss with the GT set
= level ssgt, the 2-5 pivot tokens per example, λ as in the paper's Appendix E) and full-causal
(every response token). The source and both arms then answer the held-out SSGT prompts
(``evaluation/ssgt_eval.py``: greedy, keyword classifiers). Table 12's rows compare SSGT with the
source; Table 11's retention is SSGT's rate over full-causal's (``evaluation/retention.py``).
Each rate's verdict is Welch's t on the per-prompt outcomes (0/1; seeds pooled), so the spread
is over prompts, as the paper's Wilson-style 6.9 pp interval is.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from cherry_mlx.data.encode import encode_dataset
from cherry_mlx.data.paths import ssgt_prompts_path
from cherry_mlx.evaluation.config import SSGTEvalConfig
from cherry_mlx.evaluation.retention import retention
from cherry_mlx.evaluation.ssgt_eval import METRICS, evaluate, summarise
from cherry_mlx.evaluation.verdict import claim_row
from cherry_mlx.pipelines.context import Context, StageBar, family
from cherry_mlx.pipelines.report import fmt
from cherry_mlx.pipelines.stage import Stage

MOMENTS = ("atcha", "jamkkan", "guardrail", "benign")  # chat-data families the arms train on
SSGT_LAM = 0.8  # the paper's Appendix E
ARMS = {"ssgt": dict(select="gt", level="ssgt", lam=SSGT_LAM), "full": dict(select="all")}
# (metric, paper's base -> SSGT, claim wording); "lower" metrics are claimed to fall
PAPER = {
    "self_correction_rate": ("12% → 47% (RQ5)", "Atcha: continuing from a wrong claim, corrects "
                             "itself"),
    "verification_request_rate": ("8% → 34% (RQ6)", "Jamkkan: asks to verify a wrong source"),
    "jailbreak_success_rate": ("23% → 4% (RQ6)", "Guardrail: answers a harmful request"),
}  # fmt: skip
RETAINED = "self_correction_rate"  # Table 11's retention is measured on CoT self-correction


def _judged(report: Dict[str, Any]) -> List[Dict[str, Any]]:
    """What the rates are computed from: kind, language and classifier flags per response."""
    return [{k: r[k] for k in ("id", "kind", "lang", "flags")} for r in report["responses"]]


def run_ssgt(ctx: Context) -> Dict[str, Any]:
    b, kn = ctx.budget, ctx.cfg.knobs("ssgt")
    seeds = list(range(ctx.cfg.n_seeds))
    bar = StageBar("ssgt", 1 + 2 * len(seeds))
    ctx.runs_dir("ssgt", fresh=True)
    recs = [r for r in ctx.train_records if family(r) in MOMENTS]
    if not recs:
        raise ValueError("the SSGT stage needs moment examples (ids 'atcha:...', 'jamkkan:...', "
                         "'guardrail:...') in the chat data: rebuild it with "
                         "`cherry-mlx data build`")  # fmt: skip
    data = encode_dataset(recs, ctx.tokenizer, b.seq_len)[0]
    ecfg = SSGTEvalConfig(prompts=ssgt_prompts_path(ctx.cfg.data), max_tokens=kn["ssgt_tokens"],
                          limit=kn["ssgt_prompts"], show=0)  # fmt: skip

    def measure(model) -> List[Dict[str, Any]]:
        model.eval()
        return _judged(evaluate(model, ctx.tokenizer, ecfg, progress=None))

    source, _ = ctx.load_source()
    res: Dict[str, Any] = {"steps": kn["ssgt_steps"], "seeds": seeds, "lam": SSGT_LAM,
                           "train_examples": len(data), "source": measure(source),
                           "arms": {a: [] for a in ARMS}}  # fmt: skip
    bar.step("source")
    for seed in seeds:
        for arm, kw in ARMS.items():
            model, _ = ctx.load_source()
            cfg = ctx.train_cfg("ssgt", f"{arm}-s{seed}", kn["ssgt_steps"], seed, **kw)
            ctx.fit(model, cfg, train_data=data)
            res["arms"][arm].append({"seed": seed, "judged": measure(model)})
            bar.step(f"{arm} seed {seed}")
    bar.close()
    return res


def outcomes(judged: List[Dict[str, Any]], metric: str) -> List[float]:
    """Per-prompt 0/1 outcomes of ``metric`` (only the prompts it counts)."""
    m = next(x for x in METRICS if x.name == metric)
    return [float(bool(m.hit(r["flags"]))) for r in judged if r["kind"] == m.kind
            and m.among(r["flags"])]  # fmt: skip


def _pooled(res, arm: str) -> List[Dict[str, Any]]:
    return [r for run in res["arms"][arm] for r in run["judged"]]


def _rates(judged) -> Dict[str, Any]:
    return summarise(judged)["overall"]


def _pct(r: Optional[Dict[str, Any]]) -> str:
    if not r or r.get("rate") is None:
        return "n/a (0 prompts)"
    return f"{100 * r['rate']:.0f}% ({r['k']}/{r['n']})"


def ssgt_rows(res: Dict[str, Any]) -> List[Dict[str, Any]]:
    src, ssgt, full = res["source"], _pooled(res, "ssgt"), _pooled(res, "full")
    rates = {k: _rates(v) for k, v in (("source", src), ("ssgt", ssgt), ("full", full))}
    rows = []
    for metric, (paper, what) in PAPER.items():
        lower = next(m.better for m in METRICS if m.name == metric) == "lower"
        rows.append(claim_row(
            "Table 12", f"{what}: SSGT {'lowers' if lower else 'raises'} the {metric} vs the "
            "source", paper, outcomes(ssgt, metric), outcomes(src, metric), greater=not lower,
            control=f"source {_pct(rates['source'][metric])}; full-causal "
            f"{_pct(rates['full'][metric])}", spread="prompts × seeds",
        ))  # fmt: skip
    ret = retention(rates_report(full), rates_report(ssgt), rates_report(src))[RETAINED]
    ci = ret["ci95"]
    rows.append(claim_row(
        "Table 11", f"SSGT (λ {res['lam']:g}) retains full-causal quality: its {RETAINED} is at "
        "least full-causal's (retention ≥ 100%)", "116.9% at 0.5B; 97.6% at 1.2B",
        outcomes(ssgt, RETAINED), outcomes(full, RETAINED), spread="prompts × seeds",
        control=f"full-causal {_pct(rates['full'][RETAINED])}; retention "
        f"{fmt(ret['retention'])}" + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else ""),
    ))  # fmt: skip
    return rows


def rates_report(judged) -> Dict[str, Any]:
    """The ``overall`` part of an ssgt-eval report, what ``retention`` reads."""
    return {"overall": _rates(judged)}


def ssgt_section(res: Dict[str, Any]) -> List[str]:
    tables = {"source": _rates(res["source"]), "SSGT": _rates(_pooled(res, "ssgt")),
              "full-causal": _rates(_pooled(res, "full"))}  # fmt: skip
    lines = [
        f"{res['steps']} steps per arm on {res['train_examples']} moment examples, seeds "
        f"{res['seeds']}; SSGT: λ {res['lam']:g} on the level-ssgt tokens. Greedy answers to the "
        "held-out SSGT prompts; rate (k/n), seeds pooled.",
        "",
        "| metric | better | source | SSGT | full-causal |",
        "| --- | --- | --- | --- | --- |",
    ]
    for m in METRICS:
        lines.append(f"| {m.name} | {m.better} | " + " | ".join(
            _pct(t[m.name]) for t in tables.values()) + " |")  # fmt: skip
    return lines


def plot(res: Dict[str, Any]):
    labels, vals = [], []
    for metric in PAPER:
        for name, judged in (("source", res["source"]), ("SSGT", _pooled(res, "ssgt")),
                             ("full", _pooled(res, "full"))):  # fmt: skip
            labels.append(f"{metric.split('_')[0]} {name}")
            vals.append(outcomes(judged, metric))
    return labels, vals, "rate (per-prompt outcomes)"


STAGE = Stage(
    name="ssgt",
    order=56,
    title="6. SSGT moments and retention (Tables 11, 12)",
    run=run_ssgt,
    rows=ssgt_rows,
    section=ssgt_section,
    plot=plot,
    knobs={
        "ssgt_steps": {"tiny": 2, "cpu": 8, "paper": 500},
        "ssgt_prompts": {"tiny": 1, "cpu": 2, "paper": 200},  # per kind and language
        "ssgt_tokens": {"tiny": 8, "cpu": 24, "paper": 128},
    },  # fmt: skip
)
