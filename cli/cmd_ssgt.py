"""``cherry-mlx ssgt-eval``: self-correction, verification, jailbreak and false-refusal rates."""

from __future__ import annotations

from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("ssgt-eval")
    def ssgt_eval(
        model: Optional[str] = typer.Argument(
            None, help="Run directory, checkpoint, model dir or preset (default: the latest run)."
        ),
        prompts: Optional[str] = typer.Option(
            None,
            "--prompts",
            help="Held-out SSGT prompts .jsonl (default: the bundled "
            "weights/data/default/ssgt_prompts.jsonl).",
        ),
        max_tokens: int = typer.Option(128, "--max-tokens", "-m", help="Tokens per answer."),
        json_out: Optional[str] = typer.Option(
            None,
            "--json",
            help="Write the report (rates, intervals, every response) here, and "
            "a bar chart beside it (.png).",
        ),
        temp: float = typer.Option(0.0, "--temp", help="Sampling temperature (0 = greedy)."),
        seed: int = typer.Option(0, "--seed", min=0, help="Random seed (used when --temp > 0)."),
        limit: Optional[int] = typer.Option(
            None, "--limit", help="At most N prompts of each kind and language (a quick look)."
        ),
        show: int = typer.Option(1, "--show", help="Example responses printed per kind."),
    ):
        """Generate on held-out prompts and score the SSGT moments with keyword classifiers
        (paper 3.2.5, Table 12): rates with 95% Wilson intervals and counts, overall and per
        language."""
        from cherry_mlx.evaluation.ssgt_eval import SSGTEvalConfig
        from cherry_mlx.evaluation.ssgt_report import run_ssgt_eval

        cfg = SSGTEvalConfig(
            prompts=prompts, max_tokens=max_tokens, temp=temp, seed=seed, limit=limit
        )
        run_ssgt_eval(model, cfg, json_out=json_out, show=show, echo=typer.echo)
