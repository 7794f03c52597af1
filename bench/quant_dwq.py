"""Distillation-calibrated quantisation on a real model, staged and resumable.

    python bench/quant_dwq.py MODEL --work /tmp/quant/dwq --stage next   # one stage (or chunk)
    python bench/quant_dwq.py MODEL --work /tmp/quant/dwq --stage all
    python bench/quant_dwq.py MODEL --list

Every arm starts from the full-precision weights: round-to-nearest (RTN) first, then the same
quantised model with its scales trained against the teacher's cached top-k (``quant/distill.py``;
the targets live in two teacher caches, ``WORK/teacher-train`` and ``WORK/teacher-valid``, the same
format ``cherry-mlx teacher build`` writes).
Perplexity is measured on the fake-quantised model (fp32 matmuls, the same function as the
packed model up to float rounding; each trained arm checks the real kernels' logits and states
max |d|). Results go to ``--results`` (JSON) after every stage; a finished stage is skipped.
English prose: the bundled held-out prose (never trained on); chat: the bundled valid split.
Teacher data: windows of the bundled English prose train file and the chat train split.
"""

# ruff: noqa: I001  (cherry_mlx must be imported before mlx)
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import cherry_mlx  # noqa: F401  (fast BLAS before mlx)
import mlx.core as mx
import numpy as np

from cherry_mlx.data.teacher_cache import TeacherCache

from cherry_mlx.evaluation.quantization import (
    calibration_batches,
    heldout_batches,
    heldout_loss,
    prose_perplexity,
    prose_windows,
    speed,
)
from cherry_mlx.models.loading import load_model, save_model
from cherry_mlx.quant.distill import DistillConfig, cache_targets, distill, mean_topk_kl
from cherry_mlx.quant.fakequant import from_fake, to_fake
from cherry_mlx.quant.quantize import dequantize, quantize_model, weight_memory
from cherry_mlx.training.teacher import build_cache
from cherry_mlx.training.teacher_config import TeacherConfig

ROOT = Path(__file__).resolve().parents[1]
PROSE = ROOT / "weights/data/prose"

# arm -> (mode, quantize_model keyword arguments)
ARMS = {
    "nvfp4": ("nvfp4", {}),
    "nvfp4-mixed": ("nvfp4", {"bits_budget": 4.99}),  # overall <= 5.0 with the fp32 norms
    "affine4": ("affine4", {}),
    "mxfp4": ("mxfp4", {}),
}


def stages(arms):
    out = ["targets"]
    for a in arms:
        out += [f"rtn:{a}", f"dwq:{a}"]
    return out + ["mlxlm-dwq:affine4", "speed"]


def chat_windows(model_dir: str, n: int, length: int) -> mx.array:
    rows = calibration_batches(model_dir, None, n, batch_size=n, max_len=length)
    return mx.concatenate(rows)[:n]


class Bench:
    def __init__(self, args):
        self.a = args
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.res_path = Path(args.results)
        self.res = json.loads(self.res_path.read_text()) if self.res_path.is_file() else {}
        self.res.setdefault("arms", {})
        self.deadline = time.perf_counter() + 60 * args.max_minutes
        self._evalsets = None

    def save(self):
        self.res_path.parent.mkdir(parents=True, exist_ok=True)
        self.res_path.write_text(json.dumps(self.res, indent=1) + "\n")

    def evalsets(self):
        if self._evalsets is None:
            a = self.a
            self._evalsets = (
                prose_windows(a.model, None, a.prose_windows, 257),
                heldout_batches(a.model, None, a.chat_batches, batch_size=8, max_len=256),
            )
        return self._evalsets

    def evaluate(self, model) -> dict:
        prose, chat = self.evalsets()
        model.eval()
        loss, ntok = heldout_loss(model, chat)
        return {"prose_ppl": prose_perplexity(model, prose), "chat_ppl": math.exp(loss),
                "prose_tokens": int(prose[:, 1:].size), "chat_tokens": ntok}  # fmt: skip

    def targets(self, split: str):
        return cache_targets(TeacherCache.open(self.work / f"teacher-{split}"))

    # stages -----------------------------------------------------------------------------
    def stage_targets(self):
        a = self.a
        n_prose, n_chat = a.train_windows // 2, a.train_windows - a.train_windows // 2
        train = mx.concatenate([
            prose_windows(a.model, str(PROSE / "en.jsonl"), n_prose, a.seq_len + 1),
            chat_windows(a.model, n_chat, a.seq_len + 1),
        ])  # fmt: skip
        valid = prose_windows(a.model, str(PROSE / "en.jsonl"), n_prose + 8, a.seq_len + 1)[-8:]
        t0 = time.perf_counter()
        for split, toks in (("train", train), ("valid", valid)):
            cfg = TeacherConfig(model=a.model, out=str(self.work / f"teacher-{split}"), k=a.topk,
                                data=f"bench windows ({split})", seq_len=a.seq_len,
                                batch_size=4)  # fmt: skip
            build_cache(cfg, windows=np.array(toks))
        secs = time.perf_counter() - t0
        model, _ = load_model(a.model)
        row = {**self.evaluate(model), **weight_memory(model)}
        self.res["arms"]["fp32"] = row
        self.res["budget"] = {
            "train_windows": int(train.shape[0]), "seq_len": a.seq_len, "topk": a.topk,
            "train_tokens": int(train[:, 1:].size), "teacher_seconds": round(secs, 1),
            "prose_tokens": row["prose_tokens"], "chat_tokens": row["chat_tokens"],
            "train_data": "English prose train (half) + chat train split (half)",
        }  # fmt: skip
        print(f"fp32: {row['prose_ppl']:.2f} prose, {row['chat_ppl']:.2f} chat")

    def quantised(self, arm: str):
        mode, kw = ARMS[arm]
        model, cfg = load_model(self.a.model)
        calib = None
        chosen = self.res["arms"].get(f"rtn:{arm}", {}).get("upgraded")
        if chosen is not None:  # measured once, in the rtn stage
            kw = {"keep": [f"{p}:{m}" for p, m in chosen.items()]}
        elif kw.get("bits_budget"):
            tokens = self.targets("train")[0]
            calib = [tokens[i : i + 2, :-1] for i in range(0, self.a.sens_windows, 2)]
        model, qcfg = quantize_model(model, cfg, mode, calib=calib, **kw)
        return model, qcfg

    def stage_rtn(self, arm: str):
        t0 = time.perf_counter()
        model, qcfg = self.quantised(arm)
        secs = time.perf_counter() - t0
        cq = qcfg["cherry_quant"]
        if "upgraded" in cq:  # rebuild as the dwq stage will (the chosen layers as --keep)
            self.res["arms"][f"rtn:{arm}"] = {"upgraded": cq["upgraded"]}
            model, _ = self.quantised(arm)
        mem = weight_memory(model)
        to_fake(model)
        row = {**self.evaluate(model), **mem, "quantise_seconds": round(secs, 1),
               "valid_topk_kl": mean_topk_kl(model, self.targets("valid"))}  # fmt: skip
        if "upgraded" in cq:
            row["upgraded"] = cq["upgraded"]
            row["sensitivity"] = cq["sensitivity"]
        self.res["arms"][f"rtn:{arm}"] = row
        print(f"rtn {arm}: {row['prose_ppl']:.2f} prose, {row['chat_ppl']:.2f} chat, "
              f"{row['bits_per_weight']:.2f} bpw")  # fmt: skip

    def budget_of(self, arm: str):
        """(steps, batch size): the affine4 arms compare with mlx-lm's DWQ, whose real-kernel
        steps cost ~7x ours on CPU, so they get the smaller comparison budget."""
        a = self.a
        return (a.cmp_steps, a.cmp_batch) if arm == "affine4" else (a.steps, a.batch_size)

    def stage_dwq(self, arm: str) -> bool:
        """One chunk of training; True when the arm is finished."""
        a = self.a
        model, qcfg = self.quantised(arm)
        mem = weight_memory(model)
        to_fake(model)
        steps, bs = self.budget_of(arm)
        cfg = DistillConfig(steps=steps, batch_size=bs, lr=a.lr, seed=0)
        sd = self.work / f"dwq-{arm}"
        st = distill(model, self.targets("train"), cfg, sd, stop_after=a.chunk,
                     deadline=self.deadline)  # fmt: skip
        if st.step < cfg.steps:
            print(f"dwq {arm}: {st.step}/{cfg.steps} steps; run again to continue")
            return False
        row = {**self.evaluate(model), **mem, "steps": st.step, "batch_size": bs,
               "lr": a.lr, "train_seconds": round(st.seconds, 1),
               "loss_first10": sum(st.losses[:10]) / 10, "loss_last10": sum(st.losses[-10:]) / 10,
               "valid_topk_kl": mean_topk_kl(model, self.targets("valid"))}  # fmt: skip
        x = self.targets("valid")[0][:2, :-1]
        fake_logits = model(x)
        from_fake(model)  # packed scales: the real quantised kernels
        real_logits = model(x)
        row["real_vs_fake_max_abs"] = mx.abs(real_logits - fake_logits).max().item()
        row["logit_scale"] = mx.abs(fake_logits).max().item()
        save_model(model, self.work / f"model-{arm}", qcfg, tokenizer_dir=a.model)
        self.res["arms"][f"dwq:{arm}"] = row
        print(f"dwq {arm}: {row['prose_ppl']:.2f} prose, {row['chat_ppl']:.2f} chat, real-vs-fake "
              f"max |d| {row['real_vs_fake_max_abs']:.2e}")  # fmt: skip
        return True

    def stage_mlxlm(self, arm: str) -> bool:
        """mlx-lm's own DWQ (mlx_lm.quant.dwq.dwq_quantize: real quantised kernels, scales and
        biases of affine layers) on the same teacher targets, windows and number of steps."""
        import mlx.optimizers as optim
        from mlx_lm.quant.dwq import dwq_quantize

        a = self.a
        tokens, idx, lp, _ = self.targets("train")  # windows: every position is real
        vt, vidx, vlp, _ = self.targets("valid")
        steps, bs = self.budget_of(arm)
        n_rows = steps * bs
        rows = [tokens[i % tokens.shape[0]] for i in range(n_rows)]
        lookup = {}
        for src, (tk, ii, ll) in (("train", (tokens, idx, lp)), ("valid", (vt, vidx, vlp))):
            for r in range(tk.shape[0]):
                lookup[(src, tuple(tk[r, :-1].tolist()))] = r

        def target_fn(batch, it, split):
            tk, ii, ll = (tokens, idx, lp) if split == "train" else (vt, vidx, vlp)
            r = mx.array([lookup[(split, tuple(b))] for b in batch.tolist()])
            return ll[r].astype(mx.float32), ii[r]

        model, qcfg = self.quantised(arm)
        mem = weight_memory(model)
        t0 = time.perf_counter()
        opt = optim.Adam(learning_rate=a.mlxlm_lr, bias_correction=True)
        dwq_quantize(model, target_fn, opt, [(r.tolist(), 0) for r in rows],
                     [(r.tolist(), 0) for r in vt[:bs]], bs, a.seq_len + 1, seed=0,
                     dtype=mx.float32)  # fmt: skip
        secs = time.perf_counter() - t0
        model.freeze()
        model = dequantize(model)  # the same function on fp32 matmuls (CPU: far faster)
        row = {**self.evaluate(model), **mem, "steps": steps,
               "batch_size": bs, "lr": a.mlxlm_lr, "train_seconds": round(secs, 1),
               "valid_topk_kl": mean_topk_kl(model, self.targets("valid"))}  # fmt: skip
        self.res["arms"][f"mlxlm-dwq:{arm}"] = row
        print(f"mlx-lm dwq {arm}: {row['prose_ppl']:.2f} prose, {row['chat_ppl']:.2f} chat")
        return True

    def stage_speed(self):
        """Decode speed of fp32 and every saved trained arm, alternating in one process."""
        names = ["fp32"] + [p.name[6:] for p in sorted(self.work.glob("model-*"))]
        models = {"fp32": load_model(self.a.model)[0]}
        for n in names[1:]:
            models[n] = load_model(str(self.work / f"model-{n}"))[0]
        runs = {n: [] for n in names}
        for _ in range(self.a.speed_reps):
            for n in names:
                runs[n].append(speed(models[n], 64, self.a.decode_tokens)["decode"])
        sp = {n: sorted(v)[len(v) // 2] for n, v in runs.items()}
        self.res["speed"] = {"decode_tok_s_median": sp, "reps": self.a.speed_reps,
                             "decode_tokens": self.a.decode_tokens, "prompt": 64}  # fmt: skip
        for n in names:
            print(f"{n}: decode {sp[n]:.1f} tok/s ({sp[n] / sp['fp32']:.2f}x fp32)")

    def run(self, stage: str) -> bool:
        kind, _, arm = stage.partition(":")
        if kind == "targets":
            self.stage_targets()
        elif kind == "rtn":
            self.stage_rtn(arm)
        elif kind == "dwq":
            if not self.stage_dwq(arm):
                return False
        elif kind == "mlxlm-dwq":
            self.stage_mlxlm(arm)
        elif kind == "speed":
            self.stage_speed()
        self.res.setdefault("done", []).append(stage)
        self.save()
        return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--work", default="/tmp/quant/dwq")
    ap.add_argument("--results", default=str(ROOT / "docs/quantization.json"))
    ap.add_argument("--stage", default="next", help="next | all | a stage name (see --list)")
    ap.add_argument("--arms", default="nvfp4,nvfp4-mixed,affine4")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--train-windows", type=int, default=256)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--topk", type=int, default=128)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--mlxlm-lr", type=float, default=1e-5)
    ap.add_argument("--cmp-steps", type=int, default=16, help="Steps of the affine4 arms.")
    ap.add_argument("--cmp-batch", type=int, default=2)
    ap.add_argument(
        "--max-minutes",
        type=float,
        default=1e9,
        help="Start no stage (or training step) after this many minutes.",
    )
    ap.add_argument("--chunk", type=int, default=100, help="Steps per call of a dwq stage.")
    ap.add_argument("--sens-windows", type=int, default=4)
    ap.add_argument("--prose-windows", type=int, default=8)
    ap.add_argument("--chat-batches", type=int, default=4)
    ap.add_argument("--speed-reps", type=int, default=3)
    ap.add_argument("--decode-tokens", type=int, default=24)
    args = ap.parse_args()
    b = Bench(args)
    todo = [s for s in stages(args.arms.split(",")) if s not in b.res.get("done", [])]
    if args.list:
        for s in stages(args.arms.split(",")):
            print(f"{s}{'' if s in todo else '  (done)'}")
        return
    if args.stage not in ("next", "all"):
        todo = [args.stage]
    for s in todo:
        if time.perf_counter() > b.deadline:
            print("time is up; run again to continue")
            break
        print(f"== {s}", flush=True)
        finished = b.run(s)
        if args.stage != "all" or not finished:
            break


if __name__ == "__main__":
    main()
