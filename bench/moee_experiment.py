# ruff: noqa: I001  (cherry_mlx must be imported before mlx)
"""MoEE and SGT-distillation comparison at our scale (does MoEE pay off below the paper's size?).

Pipeline (every stage cached under OUT, rerun to continue):
  base      cherry-tiny shape cut to 4 layers, trained from scratch with SGT on the data
  merged    adjacent pairs averaged (4 -> 2 unique layers), looped twice (effective depth 4)
  expert A  merged, healed on the "knowledge" families (factual, json, multiturn, tools)
  expert B  merged, healed on the "reasoning" families (arithmetic, unit, moments)
  single    merged, healed on all data for as many steps as A and B together
Then with the same number of further steps each, all trained with the SGT loss:
  single (continued)  vs  MoEE model-level top-1 (A, B)  vs  MoEE layer-level top-1 (A, B)
and SGT-only vs SGT + Eq. 11 distillation (teacher = base) on the single compressed model.

    python bench/moee_experiment.py --data DIR [--steps-base 200 --steps 60]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cherry_mlx  # noqa: F401  (fast BLAS before mlx)
import mlx.core as mx

from cherry_mlx.models.loading import (
    build_model,
    load_config,
    load_model,
    load_tokenizer,
    resolve,
    save_model,
)

KNOWLEDGE = ("factual", "json", "multiturn", "tools")


def family(ex) -> str:
    return str(ex.get("id", "")).split(":")[0]  # ids are "family:..." in the bundled data


def encode(examples, tok, seq_len):
    from cherry_mlx.data.encode import encode_dataset

    return encode_dataset(examples, tok, seq_len)[0]


def train_sgt(model, name, train, valid, steps, args, loss_fn=None, lr=None):
    from cherry_mlx.training.config import TrainConfig
    from cherry_mlx.training.trainer import train as run

    cfg = TrainConfig(
        steps=steps, batch_size=args.batch_size, seq_len=args.seq_len,
        learning_rate=lr or args.lr, warmup=min(10, steps // 10), runs_dir=str(args.out / "runs"),
        name=name if lr is None else f"{name}-lr{lr:g}", eval_every=0, save_every=steps,
        keep_checkpoints=1, demo=False,
        tokenizer=str(args.tokenizer),
    )  # fmt: skip
    t0 = time.time()
    res = run(cfg, model=model, loss_fn=loss_fn, train_data=train, valid_data=valid)
    print(f"[{name}] {steps} steps in {time.time() - t0:.0f}s: eval {res.evals[-1]}")
    return res


def evaluate(model, valid, args):
    from cherry_mlx.training.data import valid_batches
    from cherry_mlx.training.evaluate import loss_breakdown

    r = loss_breakdown(model, valid_batches(valid, args.batch_size, args.seq_len))
    return {k: round(r[k], 4) for k in ("total", "gt", "non_gt")}


def stage(path: Path, make, tok_dir):
    """Load a cached model directory, else build it with ``make() -> (model, config)``."""
    if (path / "model.safetensors").is_file():
        return load_model(path)
    model, cfg = make()
    save_model(model, path, cfg, tok_dir)
    return model, cfg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", type=Path, default=Path("runs/h8-moee"))
    ap.add_argument("--steps-base", type=int, default=200)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3, help="base and healing learning rate")
    ap.add_argument("--lr-cont", type=float, default=1e-3, help="lr of the compared runs")
    ap.add_argument("--tokenizer", type=Path, default=None, help="default: OUT/tokenizer")
    ap.add_argument("--valid", type=int, default=128, help="held-out examples used")
    ap.add_argument("--only", default="all", help="comma list: moee,distill,ablate")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.tokenizer = args.tokenizer or args.out / "tokenizer"
    from cherry_mlx.compression.merge import merge_model
    from cherry_mlx.compression.recurrent import unroll
    from cherry_mlx.data.jsonl import read_jsonl

    if not (args.tokenizer / "tokenizer.json").is_file():  # a snapshot: presets may be retrained
        import shutil

        shutil.copytree(resolve("cherry-tiny"), args.tokenizer, dirs_exist_ok=True)
    tok = load_tokenizer(args.tokenizer)
    data = Path(args.data)
    raw = read_jsonl(data / "train.jsonl")
    train_all = encode(raw, tok, args.seq_len)
    train_a = encode([e for e in raw if family(e) in KNOWLEDGE], tok, args.seq_len)
    train_b = encode([e for e in raw if family(e) not in KNOWLEDGE], tok, args.seq_len)
    valid = encode(read_jsonl(data / "valid.jsonl")[: args.valid], tok, args.seq_len)
    print(f"train {len(train_all)} (A {len(train_a)}, B {len(train_b)}), valid {len(valid)}")
    S = args.steps
    results = {}

    def make_base():
        cfg = dict(load_config(resolve("cherry-tiny")), num_hidden_layers=4)
        mx.random.seed(0)
        m = build_model(cfg)
        train_sgt(m, "base", train_all, valid, args.steps_base, args)
        return m, cfg

    base, base_cfg = stage(args.out / "base", make_base, args.tokenizer)
    results["base (4L)"] = evaluate(base, valid, args)

    def make_merged():
        m, c = merge_model(base, base_cfg, [[0, 1], [2, 3]])
        return unroll(m, c, loops=2, prelude=0, coda=0)

    merged, merged_cfg = stage(args.out / "merged", make_merged, args.tokenizer)
    results["merged 2Lx2, unhealed"] = evaluate(merged, valid, args)

    def healed(name, data_, steps):
        def make():
            m, _ = load_model(args.out / "merged")
            train_sgt(m, name, data_, valid, steps, args)
            return m, merged_cfg

        return stage(args.out / name, make, args.tokenizer)

    a, _ = healed("expert_a", train_a, S)
    b, _ = healed("expert_b", train_b, S)
    single, _ = healed("single", train_all, 2 * S)
    for k, m in (("expert A", a), ("expert B", b), ("single (2S steps)", single)):
        results[k] = evaluate(m, valid, args)

    only = set(args.only.split(",")) if args.only != "all" else {"moee", "distill", "ablate"}
    if "moee" in only:
        cont, _ = load_model(args.out / "single")
        train_sgt(cont, "single_cont", train_all, valid, S, args, lr=args.lr_cont)
        results["single (+S steps)"] = evaluate(cont, valid, args)
        from cherry_mlx.fusion.run import FuseConfig, fuse

        for gran in ("model", "layer"):
            cfg = FuseConfig.from_flat(
                experts=[str(args.out / "expert_a"), str(args.out / "expert_b")],
                granularity=gran, top_k=1, train_experts=True, steps=S,
                batch_size=args.batch_size, seq_len=args.seq_len, learning_rate=args.lr_cont,
                runs_dir=str(args.out / "runs"), name=f"moee_{gran}-lr{args.lr_cont:g}",
                balance=0.01,
            )  # fmt: skip
            rep, _ = fuse(cfg, train_all, valid, tok)
            results[f"MoEE {gran}-level top-1 (+S steps)"] = {
                **{k: round(v, 4) for k, v in rep["eval"].items()},
                "cost": rep["cost"], "routing": rep["routing"],
            }  # fmt: skip
        from cherry_mlx.fusion.flops import dense_cost

        results["single cost"] = dense_cost(merged_cfg, args.seq_len)
    if "distill" in only:
        from cherry_mlx.fusion.distill import make_distill_loss

        base.freeze()
        for run, label, fn in (
            ("kd_none", "SGT only", None),
            ("kd_gt", "SGT + distill (GT positions)", make_distill_loss(0.7, 1.0, 1, base, "gt")),
            ("kd_all", "SGT + distill (all)", make_distill_loss(0.7, 1.0, 1, base, "all")),
        ):
            m, _ = load_model(args.out / "single")
            train_sgt(m, run, train_all, valid, S, args, fn, lr=args.lr_cont)
            results[f"single, {label} (+S steps)"] = evaluate(m, valid, args)
    if "ablate" in only:
        from cherry_mlx.fusion.run import FuseConfig, ablate

        rep = ablate(FuseConfig.from_flat(
            experts=[str(args.out / "expert_a"), str(args.out / "expert_b")], top_k=1,
            train_experts=True, steps=S, batch_size=args.batch_size, seq_len=args.seq_len,
            learning_rate=args.lr_cont, runs_dir=str(args.out / "runs"), name=None,
            out=str(args.out / f"ablation-lr{args.lr_cont:g}"), mtp_heads=2,
        ), train_all, valid, tok)  # fmt: skip
        results["ablation"] = rep["rows"]
    path = args.out / f"results-{args.only.replace(',', '_')}-lr{args.lr_cont:g}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    for k, v in results.items():
        if isinstance(v, dict) and "total" in v:
            print(f"{k:<45} total {v['total']:.4f}  gt {v['gt']:.4f}  non_gt {v['non_gt']:.4f}")
    print(f"written {path}")


if __name__ == "__main__":
    main()
