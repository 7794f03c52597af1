"""SGT distillation (paper §3.4.3, Eq. 11) from a frozen, possibly quantised teacher.

``L = L_SGT(student) + β·L_KD``,  ``L_KD = Σ_{t∈G} KL(p_teacher(·|y_<t) ‖ p_student(·|y_<t))``

With a temperature T (``--temperature``, Hinton et al.'s distillation), both distributions are
softened first, p = softmax(logits / T), and the KL is scaled by T² so its gradient keeps the
same magnitude as T changes (the soft targets' gradient shrinks as 1/T²); T = 1 is Eq. 11 itself.

Eq. 11 is a *sum* over GT positions, not a mean (the paper: deliberately unnormalised). We sum per
example and average over the examples of a batch, so the term does not grow with the batch size
but does grow with an example's GT count, as the paper intends.

Only the teacher's logits at the distilled positions are ever computed: ``attach_teacher`` runs
the teacher trunk once per batch, gathers its hidden states at the flat GT indices
(G, D), and applies the LM head to those rows only, storing log-probabilities (G, V) in the batch
instead of (B, T, V). The gather index is padded to a multiple of ``pad_to`` rows with zero
weight so the compiled training step sees few distinct shapes. ``positions="all"`` distils every
response position instead (the full-distillation comparison).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from cherry_mlx.fusion.assemble import check_same_tokenizer
from cherry_mlx.fusion.config import DistillConfig
from cherry_mlx.models.loading import load_model, resolve
from cherry_mlx.quant.quantize import quantize_model
from cherry_mlx.selection.losses import gt_mask, per_token_ce, sgt_loss_from_ce
from cherry_mlx.training.data import valid_batches
from cherry_mlx.training.prepare import find_tokenizer, prepare
from cherry_mlx.training.trainer import train

POSITIONS = ("gt", "all")


def position_mask(np_batch, positions: str = "gt", level: int = 1) -> np.ndarray:
    """(B, T) bool numpy mask of the distilled positions (the trainer's ``loss_fn.needed``)."""
    if positions not in POSITIONS:
        raise ValueError(f"--positions {positions!r} is not one of {', '.join(POSITIONS)}")
    resp = np.asarray(np_batch["response"]).astype(bool)
    if positions == "all":
        return resp
    return resp & (np.asarray(np_batch["level"]) >= level)


def distill_positions(
    batch, positions: str = "gt", level: int = 1, pad_to: int = 64
) -> Tuple[mx.array, mx.array]:
    """Flat (B·T) indices of the distilled positions, padded: pos (G',) int32, pos_valid (G',)."""
    mask = position_mask({k: np.array(v) for k, v in batch.items()}, positions, level)
    flat = np.flatnonzero(mask.reshape(-1)).astype(np.int32)
    g = len(flat)
    size = max(pad_to, -(-g // pad_to) * pad_to) if pad_to else max(g, 1)
    pos, valid = np.zeros(size, np.int32), np.zeros(size, bool)
    pos[:g], valid[:g] = flat, True
    return mx.array(pos), mx.array(valid)


def teacher_logprobs(teacher: nn.Module, inputs: mx.array, pos: mx.array) -> mx.array:
    """Teacher log-probabilities at flat positions only. (B, T) inputs, (G,) pos -> (G, V)"""
    h = teacher.hidden(inputs)  # (B, T, D)
    rows = h.reshape(-1, h.shape[-1])[pos]  # (G, D): the head never sees other positions
    logits = teacher.logits(rows).astype(mx.float32)  # (G, V)
    return mx.stop_gradient(logits - mx.logsumexp(logits, axis=-1, keepdims=True))


def attach_teacher(
    batch: Dict[str, mx.array], teacher: nn.Module, positions: str = "gt", level: int = 1
) -> Dict[str, mx.array]:
    """The batch plus ``pos``, ``pos_valid`` (G',) and stored teacher ``kd_logp`` (G', V)."""
    pos, valid = distill_positions(batch, positions, level)
    logp = teacher_logprobs(teacher, batch["inputs"], pos)
    mx.eval(logp)
    return {**batch, "pos": pos, "pos_valid": valid, "kd_logp": logp}


def kl_rows(teacher_logp: mx.array, student_logits: mx.array, temperature: float = 1.0) -> mx.array:
    """T²·KL(softmax(t/T) ‖ softmax(s/T)) per row. (G, V) log-probs, (G, V) logits -> (G,)

    The teacher's stored log-probabilities soften exactly: log p_t differs from its logits by a
    per-row constant, which log_softmax(· / T) removes."""
    s = student_logits.astype(mx.float32)
    if temperature != 1.0:
        teacher_logp = teacher_logp / temperature
        teacher_logp = teacher_logp - mx.logsumexp(teacher_logp, axis=-1, keepdims=True)
        s = s / temperature
    s_logp = s - mx.logsumexp(s, axis=-1, keepdims=True)
    kl = (mx.exp(teacher_logp) * (teacher_logp - s_logp)).sum(axis=-1)
    return kl * temperature**2 if temperature != 1.0 else kl


def kd_loss(
    student: nn.Module,
    h: mx.array,
    batch,
    teacher: Optional[nn.Module] = None,
    positions: str = "gt",
    level: int = 1,
    temperature: float = 1.0,
):
    """Eq. 11 per example (at ``temperature``, scaled by T²), mean over examples.
    h: student hidden (B, T, D).

    Teacher log-probs come from the batch (``kd_logp``, stored) or are computed here from
    ``teacher`` at ``pos`` only (inside the compiled step; the teacher is a frozen constant).
    """
    if "pos" in batch:
        pos, valid = batch["pos"], batch["pos_valid"]
    else:  # an eval batch the trainer prepared without positions (host-side, not compiled)
        pos, valid = distill_positions(batch, positions, level)
    if "kd_logp" in batch:
        tlp = batch["kd_logp"]
    elif teacher is None:
        raise ValueError("distillation batches need a teacher or stored kd_logp (attach_teacher)")
    else:
        tlp = teacher_logprobs(teacher, batch["inputs"], pos)
    rows = h.reshape(-1, h.shape[-1])[pos]  # (G', D)
    kl = kl_rows(tlp, student.logits(rows), temperature) * valid.astype(mx.float32)  # (G',)
    return kl.sum() / h.shape[0]


def make_distill_loss(
    lam: float = 0.7,
    beta: float = 1.0,
    level: int = 1,
    teacher: Optional[nn.Module] = None,
    positions: str = "gt",
    temperature: float = 1.0,
) -> Callable:
    """``loss_fn(model, batch) -> (loss, ntoks)``: L_SGT + β·L_KD (KL at ``temperature``, ·T²).

    Batches carry ``pos``/``pos_valid``: from ``attach_teacher``, or added by the trainer, which
    asks ``loss_fn.needed`` for the positions.
    """
    position_mask({"response": np.zeros((1, 1), bool), "level": np.zeros((1, 1))}, positions)
    if not temperature > 0:
        raise ValueError(f"--temperature {temperature}: use a positive value (1 = Eq. 11)")

    def loss_fn(model, batch):
        h = model.hidden(batch["inputs"])  # (B, T, D)
        ce = per_token_ce(model.logits(h), batch["targets"])
        loss, ntoks = sgt_loss_from_ce(ce, batch["response"], gt_mask(batch, level), lam)
        kd = kd_loss(model, h, batch, teacher, positions, level, temperature)
        return loss + beta * kd, ntoks

    loss_fn.needed = lambda np_batch: position_mask(np_batch, positions, level)
    loss_fn.positions = positions
    return loss_fn


def quantize_teacher(
    teacher: nn.Module, mode: str = "none", config: Optional[Dict] = None
) -> nn.Module:
    """Quantise a frozen teacher in place through ``quant.quantize_model`` (``nvfp4``: 4-bit E2M1,
    blocks of 16, FP8 scales, with the per-tensor scales folded in, embedding included)."""
    if mode == "none":
        return teacher
    if mode not in ("nvfp4", "mxfp4", "affine"):
        raise ValueError(f"--teacher-quant {mode!r} is not one of none, nvfp4, mxfp4, affine")
    config = config if config is not None else {"rms_norm_eps": teacher.args.rms_norm_eps}
    quantize_model(teacher, config, "affine4" if mode == "affine" else mode)
    teacher.freeze()
    mx.eval(teacher.parameters())
    return teacher


class _KDLog:
    """Trainer callback: the KL term on held-out batches at every evaluation."""

    def __init__(self, model, batches, loss_fn_kd):
        self.model, self.batches, self.kd, self.rows = model, batches, loss_fn_kd, []

    def on_eval(self, step, metrics):
        tot, n = 0.0, 0
        for b in self.batches:
            h = self.model.hidden(b["inputs"])
            tot += float(kd_loss(self.model, h, b)) * b["inputs"].shape[0]
            n += b["inputs"].shape[0]
        row = {"step": step, "kd": tot / max(n, 1), "total": metrics.get("total"),
               "gt": metrics.get("gt"), "non_gt": metrics.get("non_gt")}  # fmt: skip
        self.rows.append(row)
        where = "GT" if getattr(self.kd, "positions", "gt") == "gt" else "all"
        print(f"[distill {step}] KL({where}, per example) {row['kd']:.4f}")


def distill(cfg: DistillConfig, train_data=None, valid_data=None, tokenizer=None):
    """Train the student with L_SGT + β·L_KD against a frozen (optionally quantised) teacher."""

    if not cfg.teacher or not cfg.student:
        raise ValueError("distill needs --teacher MODEL and --student MODEL")
    t_path, s_path = resolve(cfg.teacher), resolve(cfg.student)
    teacher, t_cfg = load_model(t_path)
    student, s_cfg = load_model(s_path)
    check_same_tokenizer([t_path, s_path], [t_cfg, s_cfg], why=(
        "--teacher and --student",
        "distillation compares their next-token distributions over one vocabulary: pick a "
        "student that uses the teacher's tokenizer (e.g. one compressed from the teacher)",
    ))  # fmt: skip
    teacher.freeze()
    teacher.eval()
    quantize_teacher(teacher, cfg.teacher_quant, t_cfg)
    tok_dir = find_tokenizer(None, [str(s_path)], default=None)
    if train_data is None:
        prep = prepare(cfg.data, cfg.seq_len, tokenizer_obj=tokenizer, tokenizer_dir=tok_dir,
                       verbose=False)  # fmt: skip
        tokenizer, train_data, valid_data = prep.tokenizer, prep.train, prep.valid
    val = [attach_teacher(b, teacher, cfg.positions) for b in
           valid_batches(valid_data, cfg.batch_size, cfg.seq_len)]  # fmt: skip
    loss_fn = make_distill_loss(cfg.lam, cfg.beta, 1, teacher, cfg.positions, cfg.temperature)
    log = _KDLog(student, val, loss_fn)
    tok = str(tok_dir) if tok_dir else None
    tcfg = cfg.stage(cfg.steps, cfg.name, cfg.runs_dir, model=str(s_path),
                     eval_every=cfg.eval_every, tokenizer=tok)  # fmt: skip
    result = train(tcfg, model=student, tokenizer=tokenizer, loss_fn=loss_fn,
                   train_data=train_data, valid_data=val, callbacks=[log])  # fmt: skip
    report = {"config": asdict(cfg), "kd": log.rows, "run_dir": str(result.run_dir)}
    (Path(result.run_dir) / "distill_report.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_kd(log.rows, Path(result.run_dir) / "distill.png", cfg.positions)
    return report


def plot_kd(rows, path: Path, positions: str = "gt") -> Optional[Path]:
    """KL over steps next to the student's GT / non-GT held-out loss."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(steps, [r["kd"] for r in rows], marker="o")
    where = "GT" if positions == "gt" else "response"
    a.set_title(f"Σ over {where} positions of KL(teacher ‖ student), per example")
    for key in ("total", "gt", "non_gt"):
        b.plot(steps, [r[key] for r in rows], marker="o", label=key)
    b.set_title("student held-out loss")
    b.legend()
    for ax in (a, b):
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def distill_command(cfg: DistillConfig, log=print) -> Dict:
    """``cherry-mlx distill``: ``distill`` and its KL and loss rows."""
    rep = distill(cfg)
    for r in rep["kd"]:
        log(
            f"step {r['step']:>5}  KL {r['kd']:.4f}  loss {r['total']:.4f}  "
            f"GT {r['gt']:.4f}  non-GT {r['non_gt']:.4f}"
        )
    log(f"run written to {rep['run_dir']} (distill_report.json, distill.png)")
    return rep
