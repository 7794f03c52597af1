"""Settings of ``cherry-mlx quantize`` (no MLX: the CLI reads them for --help)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from cherry_mlx.quant.keep import check_keep
from cherry_mlx.training.config import setting
from cherry_mlx.training.values import check_fields

MODE_NAMES = ("nvfp4", "mxfp4", "affine4", "affine8")  # quant.quantize.MODES, without MLX
# and the further widths a --keep NAME:MODE (or a bits budget) may give a layer
KEEP_MODE_NAMES = MODE_NAMES + ("affine5", "affine6")


@dataclass
class QuantizeConfig:
    """Settings of ``cherry-mlx quantize`` (its options are generated from these fields)."""

    model: Optional[str] = setting(
        None, "Model directory, run, preset or hub id (default: the latest run)."
    )
    mode: str = setting("nvfp4", f"Number format: {' | '.join(MODE_NAMES)}.")
    keep: Optional[str] = setting(
        None,
        "Layers left in full precision, comma-separated: embed, lm_head, gate, mtp, attn, mlp, "
        "any path fragment (e.g. layers.0.), or auto[:BITS] (the most sensitive layers, "
        "measured on calibration data, within BITS per weight; default mode + 0.5); NAME:MODE "
        "quantises those layers in another mode instead (e.g. embed:affine8).",
    )
    calibrate: Optional[str] = setting(
        None,
        "gptq (error-compensating rounding), awq (activation-aware channel scales) or awq+gptq; "
        "any --mode, on --calib-data.",
    )
    calib_data: Optional[str] = setting(
        None, "Calibration JSONL file or data dir (its train.jsonl; default: the bundled data)."
    )
    calib_samples: int = setting(
        32, "Calibration examples (sequences of up to 256 tokens).", at_least=1
    )
    bits_budget: Optional[float] = setting(
        None,
        "Mixed precision: give 5, 6 or 8 bits (affine) to the layers whose measured sensitivity "
        "(KL of the model with only that layer quantised, on --calib-data) per extra bit is "
        "highest, until the quantised matrices average this many bits per weight (e.g. 5.0).",
        at_least=1.0,
    )
    dwq_steps: int = setting(
        0,
        "Distillation-calibrated quantisation: train the block scales (affine: and biases) this "
        "many steps against the full-precision model's top-k distribution on --calib-data "
        "(0 = round to nearest).",
        at_least=0,
    )
    dwq_lr: float = setting(2e-4, "Learning rate of the log-scale parameters.", at_least=0.0)
    dwq_batch: int = setting(4, "Sequences per distillation step.", at_least=1)
    dwq_topk: int = setting(
        128, "Teacher tokens kept per position (when the teacher cache is built here).", at_least=1
    )
    teacher_cache: Optional[str] = setting(
        None,
        "Teacher cache dir of this model for --dwq-steps (cherry-mlx teacher build MODEL -o DIR; "
        "the same cache heals compression and trains MTP heads); default: built from "
        "--calib-data (--calib-samples rows) into OUT/teacher-cache.",
    )
    prose: Optional[str] = setting(
        None,
        'English prose JSONL ({"text": ...}) for a held-out perplexity beside the chat loss '
        "(default: the bundled held-out prose; 'none' to skip).",
    )
    speed: bool = setting(False, "Also measure prefill and decode tokens/s before and after.")
    out: Optional[str] = setting(
        None, "Output directory (default: MODEL-MODE beside it).", "--out", "-o"
    )
    data: Optional[str] = setting(
        None,
        "Held-out JSONL file or data dir for the loss comparison (default: the bundled valid "
        "split).",
    )
    eval_batches: int = setting(8, "Held-out batches (0 = skip).", at_least=0)
    fold: bool = setting(True, "NVFP4 with the tensor scales folded (--no-fold to compare).")
    force: bool = setting(
        False,
        "Write into a non-empty -o, replacing only the files this command writes (never the "
        "source, a run, or other files).",
    )

    def __post_init__(self):
        check_fields(self)  # types, bounds
        if self.mode not in MODE_NAMES:
            raise ValueError(f"--mode {self.mode!r}: use one of {', '.join(MODE_NAMES)}")
        check_keep(self.keep, KEEP_MODE_NAMES)

    @property
    def needs_calibration(self) -> bool:
        """GPTQ/AWQ, ``--keep auto`` and ``--bits-budget`` read calibration batches (DWQ reads
        its teacher cache's tokens)."""
        if self.bits_budget is not None:
            return True
        return bool(self.calibrate) or any(
            k.strip().startswith("auto") for k in (self.keep or "").split(",")
        )
