"""``cherry-mlx compress``: one compression, a sweep over depths and loops, or only the layer
redundancy diagnostics, as ``CompressConfig`` says."""

from __future__ import annotations

from cherry_mlx.compression.analyze import run_analysis
from cherry_mlx.compression.config import CompressConfig
from cherry_mlx.compression.distill_run import compress_distill
from cherry_mlx.compression.heal import compress
from cherry_mlx.compression.sweep import parse_list, sweep


def compress_command(cfg: CompressConfig, log=print):
    """Run what ``cfg`` asks for: ``analyze``, ``sweep`` or one compression (the default)."""
    if cfg.analyze:
        return run_analysis(cfg, out_dir=cfg.out, log=log)
    if cfg.sweep and cfg.heal_with == "distill":
        raise ValueError("--sweep heals with sgt; run one compression per --heal-with distill")
    if cfg.sweep:
        uniques = parse_list(cfg.sweep_to, "--sweep-to", depth=True)
        return sweep(cfg, uniques, parse_list(cfg.sweep_loops, "--sweep-loops"), log=log)
    if cfg.heal_with == "distill":
        return compress_distill(cfg, log=log)
    return compress(cfg, log=log)
