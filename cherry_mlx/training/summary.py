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
        lines.append(
            f"best: step {result.best['step']} total {result.best['total']:.4f} -> "
            f"{result.best_dir}"
        )
    if result.last_checkpoint:
        lines.append(f"last checkpoint: {result.last_checkpoint}")
    if result.stopped_early:
        lines.append(f"stopped early; continue with: cherry-mlx train --resume {result.run_dir}")
    if result.demo:
        lines.extend(format_demo(result.demo, result.run_dir))
    lines.append(f"curves: {result.run_dir / 'curves.png'}")
    return "\n".join(lines)


def format_demo(d, run_dir) -> list:
    lines = [
        f"factual questions ({d['n']} per set, greedy on {d['n_greedy']}; rank chance "
        f"{d['rank_chance']:.0%}):",
        "  set      who          rank acc  answer-token acc  cloze EM  free EM",
    ]
    for name, v in d["sets"].items():
        for who in ("model", "random_init"):
            m = v[who]
            lines.append(
                f"  {name:<8} {who:<12} {m['rank_accuracy']:>8.1%} "
                f"{m['answer_token_accuracy']:>17.1%} {m['cloze_exact_match']:>9.1%} "
                f"{m['free_exact_match']:>8.1%}"
            )
    for ex in d.get("examples", [])[:5]:
        lines.append(f"  Q: {ex['question'][:70]}")
        lines.append(
            f"     gold {ex['gold']!r}; model continues {ex['answer'][:40]!r} "
            f"{'OK' if ex['match'] else '--'}"
        )
    lines.append(f"  details: {run_dir / 'demo.json'}")
    return lines


def print_summary(result) -> None:
    print(format_summary(result))
