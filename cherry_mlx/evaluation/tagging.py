"""``cherry-mlx tag``: tag a JSONL file, report GT ratio, category shares and (on data with known
spans) the rules' precision/recall; optionally refine the spans contrastively with a model."""

from __future__ import annotations

import json

from cherry_mlx.evaluation.config import TagFileConfig
from cherry_mlx.models.loading import load_model, load_tokenizer
from cherry_mlx.selection.refine import RefineConfig, resolve_layer
from cherry_mlx.selection.refine_data import format_refine, refine_file
from cherry_mlx.selection.tag_report import format_result, tag_file
from cherry_mlx.selection.tagger import TagConfig


def tag_command(cfg: TagFileConfig, log=print) -> dict:
    """Tag ``cfg.data`` (written to ``cfg.out``), print the report; return it as a dict."""
    tok = None if cfg.tokenizer.lower() == "none" else load_tokenizer(cfg.tokenizer)
    tag_cfg = TagConfig(overwrite=cfg.overwrite, turn_initial=cfg.turn_initial)
    model = None
    if cfg.refine is not None:  # the model and its --layer checked before anything is written
        model, _ = load_model(cfg.refine)
        resolve_layer(model, cfg.layer)
    res = tag_file(cfg.data, cfg.out, tag_cfg, tokenizer=tok, plot=cfg.plot, log=log)
    report = {"stats": res.stats.to_dict(), "scores": res.scores}
    if model is not None:
        rcfg = RefineConfig(layer=cfg.layer, tau=cfg.tau, max_examples=cfg.max_examples)
        rres = refine_file(res, model, load_tokenizer(cfg.refine), rcfg, out=cfg.out, log=log)
        report["refine"] = rres.summary
        if not cfg.json_out:
            log(format_refine(rres))
    log(json.dumps(report, indent=2, ensure_ascii=False) if cfg.json_out else format_result(res))
    return report
