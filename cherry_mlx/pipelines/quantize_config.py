"""Settings of ``cherry-mlx quantize`` (no MLX: the CLI reads them for --help)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from cherry_mlx.quant.keep import check_keep
from cherry_mlx.training.config import setting
from cherry_mlx.training.values import check_fields

MODE_NAMES = ("nvfp4", "mxfp4", "affine4", "affine8")  # quant.quantize.MODES, without MLX


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
        check_keep(self.keep, MODE_NAMES)

    @property
    def needs_calibration(self) -> bool:
        """GPTQ/AWQ and ``--keep auto`` read calibration batches."""
        return bool(self.calibrate) or any(
            k.strip().startswith("auto") for k in (self.keep or "").split(",")
        )
