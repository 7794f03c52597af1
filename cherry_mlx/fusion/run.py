"""``cherry-mlx fuse``: assemble experts, train the router (+ MTP heads, + optionally experts) with
the SGT loss through the common trainer, then report routing and compute; and the paper's
Table 7 ablation ladder (``--ablate``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List

import mlx.core as mx
import numpy as np

from cherry_mlx.data.categories import CATEGORIES
from cherry_mlx.fusion.assemble import assemble, load_experts, set_trainable
from cherry_mlx.fusion.config import FuseConfig
from cherry_mlx.fusion.flops import format_cost, moee_cost
from cherry_mlx.fusion.objective import MoEEObjective, make_loss
from cherry_mlx.models.gate import routing_report
from cherry_mlx.models.loading import resolve, save_model
from cherry_mlx.models.outputs import check_output, remove_own
from cherry_mlx.training.data import valid_batches
from cherry_mlx.training.evaluate import loss_breakdown
from cherry_mlx.training.prepare import find_tokenizer, prepare
from cherry_mlx.training.trainer import train


def _load_data(cfg: FuseConfig, paths, tokenizer, train_data, valid_data):
    """(tokenizer_dir, tokenizer, train, valid): the experts' tokenizer and the encoded splits."""
    tok_dir = find_tokenizer(cfg.tokenizer, [str(p) for p in paths], default=None)
    if train_data is not None:
        return tok_dir, tokenizer, train_data, valid_data
    if tokenizer is None and tok_dir is None:
        raise FileNotFoundError(
            "the experts have no tokenizer files to encode the data with: pass --tokenizer DIR"
        )
    prep = prepare(cfg.data, cfg.seq_len, tokenizer_obj=tokenizer, tokenizer_dir=tok_dir,
                   verbose=False)  # fmt: skip
    return tok_dir, prep.tokenizer, prep.train, prep.valid


def evaluate_moee(model, batches, level: int = 1) -> Dict[str, Any]:
    """Held-out split losses plus the routing report over response positions."""

    losses = loss_breakdown(model, batches, level)
    probs, top1, mask, lev, cat = [], [], [], [], []
    for b in batches:
        if not hasattr(model, "route"):
            break
        _, aux = model.route(b["inputs"])
        for p, _i in aux:  # one entry per routing decision (per block call at layer level)
            mx.eval(p)
            pn = np.array(p)
            probs.append(pn)
            top1.append(pn.argmax(-1))
            mask.append(np.array(b["response"]))
            lev.append(np.array(b["level"]))
            cat.append(np.array(b["category"]))
    routing = None
    if probs:
        cat_fn = np.concatenate  # batches may differ in T: flatten rows first
        routing = routing_report(
            cat_fn([p.reshape(-1, p.shape[-1]) for p in probs]),
            cat_fn([t.reshape(-1) for t in top1]),
            cat_fn([m.reshape(-1) for m in mask]),
            cat_fn([x.reshape(-1) for x in lev]),
            cat_fn([x.reshape(-1) for x in cat]),
            CATEGORIES,
        )
    return {"eval": {k: losses[k] for k in ("total", "gt", "non_gt")}, "routing": routing}


def fuse(
    cfg: FuseConfig,
    train_data=None,
    valid_data=None,
    tokenizer=None,
    experts=None,
    compare: bool = True,
):
    """Assemble, train and report. ``experts``: preloaded (models, configs, paths) (ablation).

    With ``compare`` each expert alone is evaluated on the same held-out batches
    (``report["experts_eval"]``), so a mixture worse than its best expert is visible."""
    if cfg.out:  # before any work: never over an expert, a run, or (without --force) other files
        check_output(cfg.out, [resolve(e) for e in cfg.experts], cfg.force, "--out")
    models, configs, paths = experts or load_experts(cfg.experts)
    mx.random.seed(cfg.seed)
    model, mcfg = assemble(
        models, configs, cfg.granularity, cfg.top_k, cfg.shared, cfg.mtp_heads,
        sources=[str(p) for p in paths],
    )  # fmt: skip
    trainable = set_trainable(model, cfg.train_experts)
    cost = moee_cost(mcfg, cfg.seq_len)
    print(format_cost(cost))
    tok_dir, tokenizer, train_data, valid_data = _load_data(
        cfg, paths, tokenizer, train_data, valid_data
    )
    obj = MoEEObjective(lam=cfg.lam, alpha=cfg.balance, beta=cfg.mtp_weight, sgt=cfg.sgt)
    report: Dict[str, Any] = {"config": asdict(cfg), "trainable": trainable, "cost": cost}
    run_dir = None
    if cfg.steps > 0:
        # Name the run after what it is (the trainer's default would name it after the preset).
        name = cfg.name or time.strftime(f"moee-{cfg.granularity}-%Y%m%d-%H%M%S")
        tcfg = cfg.stage(cfg.steps, name, cfg.runs_dir, eval_every=cfg.eval_every,
                         tokenizer=str(tok_dir) if tok_dir else None, report_every=10)  # fmt: skip
        result = train(tcfg, model=model, tokenizer=tokenizer, loss_fn=make_loss(obj),
                       train_data=train_data, valid_data=valid_data)  # fmt: skip
        run_dir = result.run_dir
        report["history"] = [
            {"step": r["step"], "loss": r["loss"]} for r in result.history if "loss" in r
        ]

    val = valid_batches(valid_data, cfg.batch_size, cfg.seq_len)
    model.eval()
    report.update(evaluate_moee(model, val))
    if compare:
        report["experts_eval"] = []
        for m, p in zip(models, paths):
            m.eval()
            e = loss_breakdown(m, val)
            report["experts_eval"].append(
                {"expert": str(p), **{k: e[k] for k in ("total", "gt", "non_gt")}}
            )
    out = Path(cfg.out) if cfg.out else (Path(run_dir) / "fused" if run_dir else None)
    if out is not None:
        save_model(model, out, mcfg, tok_dir)
        (out / "fuse_report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        report["out"] = str(out)
    report["run_dir"] = str(run_dir) if run_dir else None
    return report, model


LADDER = (
    ("experts alone", dict(sgt=False, mtp_heads=0, balance=0.0)),
    ("+ SGT", dict(sgt=True, mtp_heads=0, balance=0.0)),
    ("+ MTP heads", dict(sgt=True, balance=0.0)),
    ("+ load balancing", dict(sgt=True)),
)


def ablate(cfg: FuseConfig, train_data=None, valid_data=None, tokenizer=None) -> Dict[str, Any]:
    """Table 7 at our scale: each rung adds one component; same data, steps and seed."""
    experts = load_experts(cfg.experts)
    mtp = cfg.mtp_heads or 2
    balance = cfg.balance or 0.01
    rows = []
    out = Path(cfg.out or Path(cfg.runs_dir or "runs") / (cfg.name or "moee-ablation"))
    check_output(out, [resolve(e) for e in cfg.experts], cfg.force, "--out")
    for i, (label, change) in enumerate(LADDER):
        # Each rung's trainer run lives inside the ablation folder, not loose under runs/.
        rung = cfg.with_(mtp_heads=mtp, balance=balance, out=None, shared=True, runs_dir=str(out))
        rung = rung.with_(**change, name=f"{out.name}-rung{i}")
        if cfg.force:  # the rung run of a previous ablation into this folder: ours to replace
            remove_own(out / rung.name, "the rung run of a previous ablation")
        print(f"== rung {i}: {label}")
        rep, _ = fuse(rung, train_data, valid_data, tokenizer, experts=experts, compare=False)
        r = rep["routing"] or {}
        rows.append({
            "rung": label, "eval_total": rep["eval"]["total"], "eval_gt": rep["eval"]["gt"],
            "eval_non_gt": rep["eval"]["non_gt"], "routing_entropy": r.get("routing_entropy"),
            "load": r.get("load"), "params": rep["cost"]["params"],
            "active_params": rep["cost"]["active_params"],
            "flops_per_token": rep["cost"]["flops_per_token"],
        })  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    table = ablation_table(rows)
    (out / "ablation.md").write_text(table + "\n")
    plot_ablation(rows, out / "ablation.png")
    print(table)
    return {"rows": rows, "out": str(out), "table": table}


def ablation_table(rows: List[Dict[str, Any]]) -> str:
    lines = [
        "| configuration | eval loss | Δ | GT | non-GT | entropy | active params | FLOPs/token |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    prev = None
    for r in rows:
        delta = "baseline" if prev is None else f"{prev - r['eval_total']:+.4f}"
        ent = "-" if r["routing_entropy"] is None else f"{r['routing_entropy']:.3f}"
        lines.append(
            f"| {r['rung']} | {r['eval_total']:.4f} | {delta} | {r['eval_gt']:.4f} | "
            f"{r['eval_non_gt']:.4f} | {ent} | {r['active_params'] / 1e6:.2f}M | "
            f"{r['flops_per_token'] / 1e6:.2f}M |"
        )
        prev = r["eval_total"]
    return "\n".join(lines)


def plot_ablation(rows: List[Dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(rows))
    for off, key, label in ((-0.25, "eval_total", "total"), (0, "eval_gt", "GT"),
                            (0.25, "eval_non_gt", "non-GT")):  # fmt: skip
        ax.bar(x + off, [r[key] for r in rows], width=0.25, label=label)
    ax.set_xticks(x, [r["rung"] for r in rows], fontsize=8)
    ax.set_ylabel("held-out loss")
    ax.set_title("MoEE ablation ladder (paper Table 7 at our scale)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def fuse_command(cfg: FuseConfig, log=print) -> Dict[str, Any]:
    """``cherry-mlx fuse``: the Table 7 ladder with ``cfg.ablate``, else one fused model, and
    what was measured and written."""
    if cfg.ablate:
        rep = ablate(cfg)
        log(f"ablation written to {rep['out']} (ablation.md, ablation.png)")
        return rep
    rep, _ = fuse(cfg)
    log(json.dumps({k: rep[k] for k in ("eval", "routing", "cost")}, indent=2))
    ev = rep["eval"]
    log(f"held-out loss: fused {ev['total']:.4f} (GT {ev['gt']:.4f}, non-GT {ev['non_gt']:.4f})")
    for e in rep.get("experts_eval") or []:
        log(
            f"  expert alone {e['total']:.4f} (GT {e['gt']:.4f}, non-GT {e['non_gt']:.4f})"
            f"  {e['expert']}"
        )
    if rep.get("out"):
        log(f"fused model written to {rep['out']} (fuse_report.json)")
    if rep.get("run_dir"):
        log(f"training run (metrics, curves, checkpoints): {rep['run_dir']}")
    return rep
