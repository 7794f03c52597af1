"""Presentation of ``cherry-mlx eval`` results: the terminal table, the PNG, a flat summary."""

from __future__ import annotations

import math
from pathlib import Path

from cherry_mlx.evaluation.wave import SplitLoss


def _fmt(x, nd=4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return "nan"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def format_result(result) -> str:
    """The terminal table: losses per class for each model, then W, W̃, R, ROI, γ̄."""
    lines = [
        f"model    {result.model} (step {_fmt(result.step)})",
        f"baseline {result.baseline}",
        f"full     {result.full or '-'}",
        f"GT = response tokens with level >= {result.level}",
        *result.notes,
    ]
    for name, sec in result.sections.items():
        w = sec.wave
        lines += [
            "",
            f"{'[' + name + ']':20s}{'total':>9s}{'GT':>9s}{'non-GT':>9s}{'ppl':>10s}"
            f"{'|G|/|T|':>9s}",
        ]
        for label, s in (("model", w.now), ("baseline", w.base), ("full-seq", w.full)):
            if s is not None:
                lines.append(_row(label, s))
        if w.base is not None:
            d = w.delta
            lines.append(
                "  "
                + "Δ = base - model".ljust(18)
                + "".join(f"{_fmt(d[k]):>9s}" for k in ("total", "gt", "non_gt"))
            )
        m = w.metrics()
        if m:
            keys = [("W", "W (Eq.3)"), ("W_norm", "W~ (Eq.4)"), ("R", "R"), ("ROI", "ROI")]
            lines.append("  " + "   ".join(f"{lab} = {_fmt(m[k], 3)}" for k, lab in keys if k in m))
        if w.now.per_category:
            lines.append(
                "  per category (GT loss): "
                + ", ".join(f"{c} {_fmt(v, 3)}" for c, v in w.now.per_category.items())
            )
        if sec.coupling:
            c = sec.coupling
            lines.append(
                f"  coupling γ̄ (Eq.5) = {_fmt(c['gamma'])}   cos = {_fmt(c['cosine'])}   "
                f"‖∇L_GT‖² = {_fmt(c['gt_norm2'])}   params = {c['n_params']}"
            )
            for chk in c["checks"]:
                lines.append(
                    f"    Theorem 3, η={chk['eta']:.3g}: ΔL_nonGT predicted "
                    f"{_fmt(chk['predicted_d_non_gt'], 5)} actual {_fmt(chk['actual_d_non_gt'], 5)}"
                    f" (ratio {_fmt(chk['ratio'], 3)}); one-step W {_fmt(chk['one_step_wave'], 3)}"
                )
    return "\n".join(lines)


def _row(label: str, s: SplitLoss) -> str:
    return (
        f"  {label:18s}{_fmt(s.total):>9s}{_fmt(s.gt):>9s}{_fmt(s.non_gt):>9s}"
        f"{_fmt(s.perplexity, 2):>10s}{_fmt(s.gt_fraction, 3):>9s}"
    )


def plot_result(result, path: str) -> str:
    """Bar chart of total / GT / non-GT loss: baseline, model, full-sequence, per condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    secs = list(result.sections.items())
    fig, axes = plt.subplots(1, len(secs), figsize=(5.5 * len(secs), 4), squeeze=False)
    classes = ("total", "gt", "non_gt")
    for ax, (name, sec) in zip(axes[0], secs):
        rows = [
            (lab, s)
            for lab, s in (
                ("baseline", sec.wave.base),
                ("model", sec.wave.now),
                ("full-seq", sec.wave.full),
            )
            if s is not None
        ]
        width = 0.8 / len(rows)
        for i, (lab, s) in enumerate(rows):
            xs = [j + i * width for j in range(len(classes))]
            ax.bar(xs, [getattr(s, k) for k in classes], width, label=lab)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(classes))], ["total", "GT", "non-GT"])
        m = sec.wave.metrics()
        title = f"{name}: W={_fmt(m.get('W'), 2)} W~={_fmt(m.get('W_norm'), 2)}"
        if sec.coupling:
            title += f" γ̄={_fmt(sec.coupling['gamma'], 3)}"
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("held-out cross-entropy")
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
