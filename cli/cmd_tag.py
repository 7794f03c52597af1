"""``cherry-mlx tag``: add GT spans to JSONL data and report GT ratio, category shares and, on data
with known spans, the rules' precision/recall; optionally contrastive refinement with a model."""

from __future__ import annotations

from typing import Optional

import typer

from cherry_mlx.models.presets import DEFAULT_PRESET


def register(app: typer.Typer) -> None:
    @app.command()
    def tag(
        data: str = typer.Argument(..., help="Input JSONL (messages, prompt/completion or text)."),
        out: Optional[str] = typer.Option(None, "-o", "--out", help="Output JSONL with spans."),
        tokenizer: Optional[str] = typer.Option(
            DEFAULT_PRESET,
            "--tokenizer",
            help="Model/preset whose tokenizer and chat template measure the statistics "
            "('none' = count characters).",
        ),
        overwrite: bool = typer.Option(False, "--overwrite", help="Re-tag turns that have spans."),
        turn_initial: bool = typer.Option(
            False, "--turn-initial", help="Also tag the first word of every turn (Table 2)."
        ),
        refine: Optional[str] = typer.Option(
            None, "--refine", help="Model for contrastive refinement (preset, dir or run)."
        ),
        layer: Optional[int] = typer.Option(
            None, "--layer", help="Layer compared by the refinement (default: middle)."
        ),
        tau: float = typer.Option(5.0, "--tau", help="Promote when d/median(d) > tau."),
        max_examples: int = typer.Option(32, "--max-examples", help="Examples refined."),
        plot: bool = typer.Option(True, "--plot/--no-plot", help="Write OUT.png next to OUT."),
        json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ):
        """Tag GT tokens (paper §3.2.2) and show their statistics.

        Example: cherry-mlx tag weights/data/default/valid.jsonl -o /tmp/valid.tagged.jsonl
        """
        from cherry_mlx.selection.tag_report import format_result, tag_file
        from cherry_mlx.selection.tagger import TagConfig

        tok = None
        if tokenizer and tokenizer.lower() != "none":
            from cherry_mlx.models.loading import load_tokenizer

            tok = load_tokenizer(tokenizer)
        cfg = TagConfig(overwrite=overwrite, turn_initial=turn_initial)
        res = tag_file(data, out, cfg, tokenizer=tok, plot=plot, log=typer.echo)
        report = {"stats": res.stats.to_dict(), "scores": res.scores}
        if refine is not None:
            from cherry_mlx.models.loading import load_model, load_tokenizer
            from cherry_mlx.selection.refine import RefineConfig
            from cherry_mlx.selection.refine_data import format_refine, refine_file

            rcfg = RefineConfig(layer=layer, tau=tau, max_examples=max_examples)
            model, _ = load_model(refine)
            rres = refine_file(res, model, load_tokenizer(refine), rcfg, out=out, log=typer.echo)
            report["refine"] = rres.summary
            if not json_out:
                typer.echo(format_refine(rres))
        if json_out:
            import json

            typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
        else:
            typer.echo(format_result(res))
