"""``cherry-mlx quantize``: NVFP4 (tensor scales folded), MXFP4 or affine 4/8-bit via MLX."""

from __future__ import annotations

from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def quantize(
        model: Optional[str] = typer.Argument(
            None, help="Model directory, run, preset or hub id (default: the latest run)."
        ),
        mode: str = typer.Option("nvfp4", "--mode", help="nvfp4 | mxfp4 | affine4 | affine8."),
        keep: Optional[str] = typer.Option(
            None,
            "--keep",
            help="Layers left in full precision, comma-separated: embed, lm_head, gate, mtp, "
            "attn, mlp, any path fragment (e.g. layers.0.), or auto[:BITS] (the most sensitive "
            "layers, measured on calibration data, within BITS per weight; default mode + 0.5); "
            "NAME:MODE quantises those layers in another mode instead (e.g. embed:affine8).",
        ),
        calibrate: Optional[str] = typer.Option(
            None,
            "--calibrate",
            help="gptq (error-compensating rounding), awq (activation-aware channel scales) or "
            "awq+gptq; any --mode, on --calib-data.",
        ),
        calib_data: Optional[str] = typer.Option(
            None,
            "--calib-data",
            help="Calibration JSONL file or data dir (its train.jsonl; default: bundled data).",
        ),
        calib_samples: int = typer.Option(
            32, "--calib-samples", help="Calibration examples (sequences of up to 256 tokens)."
        ),
        measure_speed: bool = typer.Option(
            False, "--speed", help="Also measure prefill and decode tokens/s before and after."
        ),
        out: Optional[str] = typer.Option(
            None, "--out", "-o", help="Output directory (default: MODEL-MODE beside it)."
        ),
        data: Optional[str] = typer.Option(
            None,
            "--data",
            help="Held-out JSONL file or data dir for the loss comparison "
            "(default: the bundled valid split).",
        ),
        eval_batches: int = typer.Option(8, "--eval-batches", help="Held-out batches (0 = skip)."),
        no_fold: bool = typer.Option(
            False, "--no-fold", help="NVFP4 without the folded tensor scales (to compare)."
        ),
        force: bool = typer.Option(
            False,
            "--force",
            help="Write into a non-empty -o, replacing only the files this "
            "command writes (never the source, a run, or other files).",
        ),
    ):
        """Quantise a model; prints bits per weight, weight memory and the held-out loss and
        perplexity change against full precision. The result loads with cherry-mlx (and, for
        plain Llama configs, mlx_lm.load)."""
        from pathlib import Path

        from cherry_mlx.decoding.session import default_model
        from cherry_mlx.evaluation.quantization import calibration_batches, heldout_batches
        from cherry_mlx.evaluation.quantization import quantize as run
        from cherry_mlx.models.loading import resolve
        from cherry_mlx.models.outputs import check_output

        model = model or default_model()
        src = resolve(model)
        out = out or str(Path(src).parent / f"{Path(src).name}-{mode}")
        check_output(out, [src], force)  # before the held-out data is read
        batches = heldout_batches(model, data, eval_batches) if eval_batches > 0 else None
        if eval_batches > 0 and not batches:
            typer.echo(
                "no held-out data found (pass --data); skipping the loss comparison", err=True
            )
        needs_calib = calibrate or any(
            k.strip().startswith("auto") for k in (keep or "").split(",")
        )
        calib = calibration_batches(model, calib_data, calib_samples) if needs_calib else None
        report = run(model, out, mode=mode, keep=keep, batches=batches, fold=not no_fold,
                     calibrate=calibrate, calib=calib, measure_speed=measure_speed,
                     force=force)  # fmt: skip
        typer.echo(report.summary())
