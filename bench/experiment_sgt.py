"""The SGT experiment: SGT vs full-sequence vs random-15% vs shuffled text.

Four runs of the tiny preset from the *same* initialisation (same seed, checked: their step-0
evals must agree), same data order, same steps:

    sgt       --select gt     λ=0.7   the paper's SGT
    full      --select all            plain full-sequence loss (the R denominator)
    random    --select random λ=0.7   the same number of supervised positions per example, at random
    shuffled  --select gt     λ=0.7   on token-shuffled responses (train and held-out; Corollary 5)

For each run: held-out loss on GT / non-GT positions over the steps (the trainer's evals.jsonl),
W and W̃ (Eq. 3-4) against step 0, R and ROI against the full run at matched steps, and γ̄ (Eq. 5)
at the final weights plus the Theorem-3 one-step check; γ̄ is also measured at the shared init on
coherent and on shuffled text. GT positions are always the tagged GT set (for the random run too:
its W says what supervising random positions does to the GT tokens). Writes results.json,
results.md and experiment_sgt.png to the output directory.

    python bench/experiment_sgt.py --steps 200            # ~minutes per run on 2 cores
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

import cherry_mlx  # noqa: F401  (fast BLAS before mlx)

ARMS = {
    "sgt": dict(select="gt", lam=0.7),
    "full": dict(select="all", lam=0.7),
    "random": dict(select="random", lam=0.7),
    "shuffled": dict(select="gt", lam=0.7),
}


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--learning-rate", type=float, default=3e-3)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--eval-batches", type=int, default=-1)
    p.add_argument("--coupling-batches", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of the arms")
    p.add_argument("--preset", default="cherry-tiny")
    p.add_argument("--data", default=None)
    p.add_argument("--out", default=None, help="output dir (default runs/experiment-sgt-TIME)")
    return p.parse_args()


def split_of(row):
    from cherry_mlx.evaluation.wave import SplitLoss

    c = row["counts"]
    return SplitLoss(
        total=row["total"],
        gt=row["gt"],
        non_gt=row["non_gt"],
        n_total=c["total"],
        n_gt=c["gt"],
        n_non_gt=c["non_gt"],
        per_category=row.get("per_category", {}),
    )


def coupling_of(model, batches):
    from cherry_mlx.evaluation.coupling import measure_coupling

    c = measure_coupling(model, batches)
    mid = c.checks[1]
    return {
        "gamma": c.gamma,
        "cosine": c.cosine,
        "gt_norm2": c.gt_norm2,
        "t3_eta": mid.eta,
        "t3_predicted": mid.predicted_d_non_gt,
        "t3_actual": mid.actual_d_non_gt,
        "t3_ratio": mid.ratio,
        "checks": [x.to_dict() for x in c.checks],
    }


def main():
    args = parse()
    from cherry_mlx.data.shuffle import shuffle_encoded
    from cherry_mlx.evaluation.measure import InitOf, json_clean
    from cherry_mlx.evaluation.wave import (
        normalised_wave_factor,
        recovered_fraction,
        roi,
        wave_factor,
    )
    from cherry_mlx.models.loading import load_tokenizer, resolve
    from cherry_mlx.training.config import TrainConfig
    from cherry_mlx.training.data import load_splits, valid_batches
    from cherry_mlx.training.trainer import train

    out = Path(args.out or time.strftime("runs/experiment-sgt-%Y%m%d-%H%M%S"))
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(resolve(args.preset))
    splits = load_splits(args.data, tokenizer, args.seq_len)
    data = {"coherent": (splits["train"], splits["valid"])}
    rng = np.random.default_rng(args.seed + 12345)
    data["shuffled"] = tuple([shuffle_encoded(e, rng) for e in part] for part in data["coherent"])
    heldout = {k: valid_batches(v[1], args.batch_size, args.seq_len) for k, v in data.items()}
    print(
        f"train {len(splits['train'])} / held-out {len(splits['valid'])} examples; "
        f"{args.steps} steps x {args.batch_size} x {args.seq_len}",
        flush=True,
    )

    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    runs = {}
    for arm in arms:
        cond = "shuffled" if arm == "shuffled" else "coherent"
        cfg = TrainConfig(
            preset=args.preset,
            data=args.data,
            name=arm,
            runs_dir=str(out),
            steps=args.steps,
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            learning_rate=args.learning_rate,
            eval_every=args.eval_every,
            eval_batches=args.eval_batches,
            save_every=args.steps,
            keep_checkpoints=1,
            demo=False,
            seed=args.seed,
            **ARMS[arm],
        )
        t0 = time.perf_counter()
        res = train(cfg, tokenizer=tokenizer, train_data=data[cond][0], valid_data=data[cond][1])
        secs = time.perf_counter() - t0
        print(f"[{arm}] {args.steps} steps in {secs:.0f}s; measuring coupling", flush=True)
        runs[arm] = {
            "cond": cond,
            "evals": res.evals,
            "seconds": secs,
            "coupling": coupling_of(res.model, heldout[cond][: args.coupling_batches]),
        }

    init = InitOf(out, args.preset, args.seed).build()
    init_coupling = {c: coupling_of(init, b[: args.coupling_batches]) for c, b in heldout.items()}

    # Same init check: the coherent runs' step-0 evals must be identical.
    zeros = {a: r["evals"][0]["total"] for a, r in runs.items() if r["cond"] == "coherent"}
    assert len({round(v, 5) for v in zeros.values()}) <= 1, f"runs differ at step 0: {zeros}"

    table, curves = [], {}
    full = runs.get("full")
    for arm, r in runs.items():
        ev = [e for e in r["evals"] if e["step"] in (0, args.steps)]
        base, now = split_of(ev[0]), split_of(ev[-1])
        row = {
            "arm": arm,
            "text": r["cond"],
            "gt_fraction": now.gt_fraction,
            "L0_total": base.total,
            "L_total": now.total,
            "L0_gt": base.gt,
            "L_gt": now.gt,
            "L0_non_gt": base.non_gt,
            "L_non_gt": now.non_gt,
            "W": wave_factor(base, now),
            "W_norm": normalised_wave_factor(base, now),
        }
        frac = 1.0 if arm == "full" else now.gt_fraction
        if full is not None and r["cond"] == "coherent":
            f_now = split_of([e for e in full["evals"] if e["step"] == args.steps][0])
            row["R"] = recovered_fraction(base, now, f_now)
            row["ROI"] = roi(row["R"], frac)
        row.update(
            {
                "gamma": r["coupling"]["gamma"],
                "t3_ratio": r["coupling"]["t3_ratio"],
                "seconds": r["seconds"],
            }
        )
        table.append(row)
        b0 = split_of(r["evals"][0])
        curves[arm] = [
            (e["step"], e["gt"], e["non_gt"], wave_factor(b0, split_of(e))) for e in r["evals"]
        ]
    result = {
        "args": vars(args),
        "table": table,
        "init_coupling": init_coupling,
        "runs": {
            a: {k: v for k, v in r.items() if k != "evals"} | {"evals": r["evals"]}
            for a, r in runs.items()
        },
    }
    (out / "results.json").write_text(json.dumps(json_clean(result), indent=2) + "\n")
    md = markdown(table, init_coupling, args)
    (out / "results.md").write_text(md + "\n")
    plot(curves, table, init_coupling, out / "experiment_sgt.png")
    print(md)
    print(f"wrote {out}/results.json, results.md, experiment_sgt.png")


def _f(x, nd=3):
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def markdown(table, init_coupling, args) -> str:
    head = (
        "| run | text | ΔL_GT | ΔL_nonGT | L_total (0 → N) | W | W̃ | R | ROI | γ̄ (final) "
        "| Thm-3 actual/pred |"
    )
    lines = [
        f"Tiny preset from scratch, {args.steps} steps × {args.batch_size} × {args.seq_len}, "
        f"seed {args.seed}; |G|/|T| = {_f(table[0]['gt_fraction'])} on held-out data.",
        "",
        head,
        "|" + "---|" * 11,
    ]
    for r in table:
        lines.append(
            f"| {r['arm']} | {r['text']} | {_f(r['L0_gt'] - r['L_gt'])} | "
            f"{_f(r['L0_non_gt'] - r['L_non_gt'])} | {_f(r['L0_total'])} → {_f(r['L_total'])} | "
            f"{_f(r['W'])} | {_f(r['W_norm'])} | {_f(r.get('R'))} | {_f(r.get('ROI'))} | "
            f"{_f(r['gamma'], 4)} | {_f(r['t3_ratio'])} |"
        )
    lines += [
        "",
        "γ̄ at the shared initialisation: "
        + ", ".join(
            f"{c} {_f(v['gamma'], 4)} (cos {_f(v['cosine'])})" for c, v in init_coupling.items()
        ),
    ]
    return "\n".join(lines)


def plot(curves, table, init_coupling, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(16, 4.5))
    for arm, pts in curves.items():
        s, gt, ng, w = zip(*pts)
        (line,) = ax[0].plot(s, ng, label=f"{arm} non-GT")
        ax[0].plot(s, gt, "--", color=line.get_color(), label=f"{arm} GT")
        ax[1].plot(s[1:], w[1:], label=arm, color=line.get_color())
    ax[0].set(xlabel="step", ylabel="held-out CE", title="GT (dashed) and non-GT loss")
    ax[0].legend(fontsize=7)
    ax[1].set(xlabel="step", ylabel="W = ΔL_nonGT / ΔL_GT", title="wave factor over training")
    ax[1].axhline(0, color="grey", lw=0.5)
    ax[1].legend(fontsize=8)
    keys = ["W", "W_norm", "R", "ROI", "gamma"]
    width = 0.8 / len(table)
    for i, r in enumerate(table):
        vals = [r.get(k, float("nan")) for k in keys]
        ax[2].bar([j + i * width for j in range(len(keys))], vals, width, label=r["arm"])
    ax[2].set_xticks([j + 0.4 - width / 2 for j in range(len(keys))], ["W", "W~", "R", "ROI", "γ̄"])
    ax[2].axhline(0, color="grey", lw=0.5)
    ax[2].set_title(
        "γ̄ init: " + ", ".join(f"{c} {v['gamma']:.3f}" for c, v in init_coupling.items()),
        fontsize=9,
    )
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
