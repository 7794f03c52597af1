"""What a run shows and leaves: progress line, ``metrics.jsonl``, ``evals.jsonl``, curves PNG.

Per-step losses stay on the device until a reporting step, when they are read in one transfer and
written to ``metrics.jsonl`` one line per step; so the hot loop never blocks on ``.item()``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import mlx.core as mx


def peak_memory() -> Dict[str, float]:
    """Peak memory so far, MiB: ``mlx`` is what MLX allocated (``mx.get_peak_memory``: weights,
    gradients, optimizer state, activations), ``rss`` the process's resident peak (adds the
    Python runtime, libraries and MLX's buffer cache; ``getrusage``'s ru_maxrss)."""
    out = {"peak_mib": mx.get_peak_memory() / 2**20}
    try:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["rss_peak_mib"] = kib / (2**20 if sys.platform == "darwin" else 2**10)  # macOS: bytes
    except (ImportError, OSError):  # pragma: no cover - Windows
        pass
    return out


class Progress:
    """A stderr progress line: step, loss, tokens/s, ETA (tqdm when available)."""

    def __init__(self, total: int, start: int = 0, quiet: Optional[bool] = None):
        self.quiet = bool(os.environ.get("CHERRY_MLX_QUIET")) if quiet is None else quiet
        self.total, self.start = total, start
        self.t0 = time.perf_counter()
        self.bar = None
        if not self.quiet:
            try:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=total,
                    initial=start,
                    file=sys.stderr,
                    unit="step",
                    dynamic_ncols=True,
                    leave=True,
                )
            except ImportError:  # pragma: no cover - tqdm ships with mlx-lm
                self.bar = None

    def update(self, step: int, loss: float, tok_s: float, lr: float) -> None:
        if self.quiet:
            return
        text = f"loss {loss:.4f} | {tok_s:,.0f} tok/s | lr {lr:.2e}"
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix_str(text, refresh=True)
        else:
            done = step - self.start
            eta = (time.perf_counter() - self.t0) / max(done, 1) * (self.total - step)
            print(f"step {step}/{self.total} | {text} | eta {eta:.0f}s", file=sys.stderr)

    def message(self, text: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class MetricsLog:
    """Appends per-step metrics (read from the device in batches) to ``metrics.jsonl``."""

    def __init__(self, run_dir: Path, write: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.write = write  # False on the ranks of a distributed run other than 0
        self.pending: List[tuple] = []  # (step, loss array, host-side fields)
        self.rows: List[Dict] = []

    def add(self, step: int, loss: mx.array, gnorm: mx.array, fields: Dict) -> None:
        self.pending.append((step, loss, gnorm, fields))

    def flush(self) -> List[Dict]:
        """Read pending losses in one transfer, write them, return the new rows."""
        if not self.pending:
            return []
        losses = mx.stack([p[1] for p in self.pending]).tolist()
        norms = mx.stack([p[2] for p in self.pending]).tolist()
        rows = []
        for (step, _, _, f), loss, norm in zip(self.pending, losses, norms):
            rows.append({"step": step, "loss": loss, "grad_norm": norm, **f})
        if self.write:
            with self.path.open("a") as fh:
                for r in rows:
                    fh.write(json.dumps(r) + "\n")
        self.pending.clear()
        self.rows.extend(rows)
        return rows

    def truncate_after(self, step: int) -> None:
        """On resume: drop rows written after the checkpoint's step (the killed tail)."""
        if not self.path.is_file():
            return
        keep = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
        keep = [ln for ln in keep if json.loads(ln).get("step", 0) <= step]
        if self.write:
            self.path.write_text("".join(ln + "\n" for ln in keep))
        self.rows = [json.loads(ln) for ln in keep]


def read_jsonl_rows(path: Path) -> List[Dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def plot_curves(run_dir: Path, rows: List[Dict], evals: List[Dict], title: str = "") -> Path:
    """Training loss per step and valid total / GT / non-GT loss per eval, as ``curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    if rows:
        ax.plot(
            [r["step"] for r in rows],
            [r["loss"] for r in rows],
            lw=0.8,
            alpha=0.6,
            label="train loss (objective)",
        )
    for key, style in (("total", "-o"), ("gt", "-s"), ("non_gt", "-^")):
        pts = [(e["step"], e[key]) for e in evals if e.get(key) == e.get(key)]
        if pts:
            ax.plot(*zip(*pts), style, ms=3, label=f"valid {key}")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title(title or Path(run_dir).name)
    ax.grid(alpha=0.3)
    ax.legend()
    out = Path(run_dir) / "curves.png"
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
