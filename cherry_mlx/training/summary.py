"""A short human summary of a finished (or stopped) run, printed by ``cherry-mlx train``."""

from __future__ import annotations


def format_summary(result) -> str:
    lines = [f"run: {result.run_dir}  (step {result.step})"]
    if result.history:
        last = result.history[-1]
        lines.append(f"last train loss {last['loss']:.4f}")
    if result.evals:
        first, final = result.evals[0], result.evals[-1]
        lines.append(f"valid loss        step {first['step']:>5}   step {final['step']:>5}")
        for k in ("total", "gt", "non_gt"):
            lines.append(f"  {k:<14} {first[k]:>10.4f}   {final[k]:>10.4f}")
    if result.best:
        lines.append(f"best: step {result.best['step']} total {result.best['total']:.4f} -> "
                     f"{result.best_dir}")
    if result.last_checkpoint:
        lines.append(f"last checkpoint: {result.last_checkpoint}")
    if result.stopped_early:
        lines.append(f"stopped early; continue with: cherry-mlx train --resume {result.run_dir}")
    if result.demo:
        d = result.demo
        lines.append(f"factual questions ({d['n']} per set; rank chance {d['rank_chance']:.0%}):")
        lines.append("  set      model: cloze EM  rank acc  free EM | random init: cloze EM"
                     "  rank acc")
        for name, v in d["sets"].items():
            m, b = v["model"], v["random_init"]
            lines.append(
                f"  {name:<8} {m['cloze_exact_match']:>14.1%} {m['rank_accuracy']:>9.1%} "
                f"{m['free_exact_match']:>8.1%} | {b['cloze_exact_match']:>20.1%} "
                f"{b['rank_accuracy']:>9.1%}"
            )
        for ex in d.get("examples", [])[:5]:
            lines.append(f"  Q: {ex['question'][:70]}")
            lines.append(f"     gold {ex['gold']!r}; model continues {ex['answer'][:40]!r} "
                         f"{'OK' if ex['match'] else '--'}")
        lines.append(f"  details: {result.run_dir / 'demo.json'}")
    lines.append(f"curves: {result.run_dir / 'curves.png'}")
    return "\n".join(lines)


def print_summary(result) -> None:
    print(format_summary(result))
