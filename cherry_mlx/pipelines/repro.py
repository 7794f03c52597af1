"""``cherry-mlx repro``: the paper's experiments at a chosen budget, side by side with the paper.

Stages run in order: ``source`` (only for a preset without weights: full-loss training from
scratch), then every stage of ``pipelines/stages/`` by its ``order`` (``sgt``, ``anchor``,
``compress``, ``loops``, ``mtp``, ``quant``, ``moee``; ``--only`` picks some). Each
finished stage writes ``results/STAGE.json`` atomically, with the budget settings it ran with, so
a killed repro rerun with the same ``-o`` skips the finished stages and starts again at the one it
was in (that stage's run directories are cleared first). Model, budget and data are fixed per
directory; ``--set`` and ``--seeds`` may differ between stages (one slow stage at a smaller size,
or one rerun with more seeds by ``--redo STAGE``) since every stage's settings are in its result
and the report. ``report.md`` and the plots are rewritten from the JSON at the end
(``--report-only``: only that, with the verdicts derived again).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Iterable, Tuple

from cherry_mlx.models.loading import load_config, model_config, resolve, save_model
from cherry_mlx.models.outputs import check_output
from cherry_mlx.models.runs import RUNS_DIR
from cherry_mlx.pipelines.config import ReproConfig
from cherry_mlx.pipelines.context import TEACHER_DIR, build_context, has_weights, source_config
from cherry_mlx.pipelines.report import read_json, report_only, write_json, write_report
from cherry_mlx.pipelines.stage import Stage, stages
from cherry_mlx.training.data import default_data_dir
from cherry_mlx.training.prepare import find_tokenizer
from cherry_mlx.training.trainer import train

PER_STAGE = ("set", "seeds")  # recorded with each stage's result, not fixed per directory


def read_results(out: Path) -> Dict[str, Any]:
    """Finished stages' results: ``{stage: result}`` from ``out/results/*.json``."""
    folder = Path(out) / "results"
    if not folder.is_dir():
        return {}
    return {p.stem: read_json(p) for p in sorted(folder.glob("*.json"))}


def _manifest(cfg: ReproConfig, out: Path) -> Dict[str, Any]:
    """What the results in ``out`` were made with; resuming with another model, budget or data is
    an error (``--set`` and ``--seeds`` are recorded per stage instead)."""
    key = {"model": cfg.model, "budget": cfg.budget, "data": cfg.data}
    path = out / MANIFEST
    if path.is_file():
        old = json.loads(path.read_text())
        if {k: v for k, v in old.get("key", {}).items() if k not in PER_STAGE} != key:
            raise ValueError(
                f"{out} holds a repro made with {old.get('key')}; rerun with those settings to "
                f"resume it, or pass another -o DIR for {key}"
            )
        return old
    man = {"key": {**key, "seeds": cfg.n_seeds, "set": cfg.overrides or None},
           "started": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    write_json(path, man)
    return man


def _source(cfg: ReproConfig, out: Path, log) -> Path:
    """The model every stage starts from: MODEL itself, or MODEL trained from scratch."""
    if has_weights(cfg.model):
        return resolve(cfg.model)
    done = out / "results" / "source.json"
    if done.is_file():
        return Path(json.loads(done.read_text())["dir"])
    t0 = time.perf_counter()
    tcfg = source_config(cfg, out)
    log(f"[repro] {cfg.model} has no weights: training it {tcfg.steps} steps from scratch")
    result = train(tcfg)
    path = out / "source"
    tok = find_tokenizer(None, [cfg.model])
    base = load_config(resolve(cfg.model))
    save_model(result.model, path, model_config(result.model, base), tok)
    write_json(done, {"dir": str(path), "steps": tcfg.steps, "pretrained": False,
                      "seconds": time.perf_counter() - t0})  # fmt: skip
    return path


MANIFEST = "repro.json"
# what repro writes at the top of its directory (and STAGE.png per stage)
OWN = (MANIFEST, "results", "runs", "source", "results.json", "report.md", TEACHER_DIR)


def own_names(names: Iterable[str]) -> Tuple[str, ...]:
    return (*OWN, *(f"{n}.png" for n in names))


def check_inputs(cfg: ReproConfig) -> None:
    """The model and the data exist: checked before the directory is claimed or any work."""
    resolve(cfg.model)  # ModelNotFound (a ValueError) naming the model and the fix
    data = Path(cfg.data) if cfg.data else default_data_dir()
    if not (data / "train.jsonl").is_file():
        hint = "pass a directory holding train.jsonl" if cfg.data else "run `cherry-mlx data build`"
        raise FileNotFoundError(f"--data {data}: no train.jsonl there; {hint}")


def claim_output(cfg: ReproConfig, out: Path, names: Iterable[str]) -> bool:
    """May repro write in ``out`` (``outputs.py``'s policy)? A directory with repro's manifest
    is resumed; the source, a run, a file are refused; any other non-empty directory only with
    ``--force``, and then only when none of its entries bears a name repro writes (nothing of
    the user's is replaced). True when ``out`` is new to repro (its manifest not yet written)."""
    if (out / MANIFEST).is_file():
        return False
    check_output(out, [resolve(cfg.model)], force=True)  # the source (weights or a preset)
    if out.is_dir() and any(out.iterdir()):
        if not cfg.force:
            raise ValueError(
                f"-o {out} is not empty and holds no repro ({MANIFEST}); choose another output "
                "directory, or pass --force to add repro's files beside the ones there"
            )
        clash = sorted(p.name for p in out.iterdir() if p.name in own_names(names))
        if clash:
            raise ValueError(
                f"-o {out} holds {', '.join(clash)}, which repro would write over, and no repro "
                f"({MANIFEST}); move them away or choose another output directory"
            )
    return True


def run_repro(cfg: ReproConfig, log=print) -> Dict[str, Any]:
    """Run (or resume) every selected stage, then write ``report.md`` and the plots."""
    out = Path(cfg.out) if cfg.out else RUNS_DIR / f"repro-{cfg.budget}"
    if cfg.report_only:
        log(f"[repro] report: {report_only(out)}")
        return read_json(out / "results.json")["stages"]
    todo = stages(cfg.stages)
    check_inputs(cfg)
    created = not out.exists()
    fresh = claim_output(cfg, out, [s.name for s in stages()])
    out.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(cfg, out)
    try:
        results = _run(cfg, out, todo, manifest, log)
    except BaseException:
        if fresh and [p.name for p in out.iterdir()] == [MANIFEST]:  # nothing done: unclaim
            (out / MANIFEST).unlink()
            if created:
                shutil.rmtree(out, ignore_errors=True)
        raise
    return results


def _run(cfg: ReproConfig, out: Path, todo, manifest, log) -> Dict[str, Any]:
    source_dir = _source(cfg, out, log)
    ctx = None
    for stage in todo:
        path = out / "results" / f"{stage.name}.json"
        if path.is_file() and stage.name in cfg.redo_stages:
            os.replace(path, path.with_name(path.name + ".prev"))
            log(f"[repro] {stage.name}: running again (earlier result kept as {path.name}.prev)")
        if path.is_file():
            log(f"[repro] {stage.name}: done earlier ({path}), skipped")
            continue
        ctx = ctx or build_context(cfg, out, source_dir)
        log(f"[repro] {stage.name}: running at the {cfg.budget} budget")
        res = run_stage(stage, ctx, cfg)
        write_json(path, res)
        log(f"[repro] {stage.name}: {res['seconds']:.0f}s, {path}")
    results = read_results(out)
    write_json(out / "results.json", {"key": manifest["key"], "started": manifest.get("started"),
                                      "stages": results})  # fmt: skip
    report = write_report(out, cfg, manifest, results)
    log(f"[repro] report: {report}")
    return results


def run_stage(stage: Stage, ctx, cfg: ReproConfig) -> Dict[str, Any]:
    """One stage's result JSON: its own numbers, its claim rows, and the settings it ran with."""
    t0 = time.perf_counter()
    res = stage.run(ctx)
    res["rows"] = stage.rows(res)
    res["fixes"] = sorted(stage.fixes)
    res["seconds"] = time.perf_counter() - t0
    res["set"] = cfg.overrides or None
    res["n_seeds"] = cfg.n_seeds
    res["budget"] = {k: v for k, v in asdict(cfg.spec).items() if k != "name"}
    res["budget"].update(cfg.knobs(stage.name))
    return res
