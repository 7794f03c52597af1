"""``cherry-mlx eval``: the SGT measurements of one run or model, as a table, JSON and a plot.

Given a model (a run directory stands for its best checkpoint, else its latest step), this loads the
held-out split, measures the split losses of the model and of its baseline (the run's step-0
checkpoint unless ``--baseline`` says otherwise), and derives W, W̃ (Eq. 3-4); with a full-sequence
run, R and ROI at the *matched step* (the full run's ``step-N`` for the evaluated model's N); with
``coupling``, γ̄ (Eq. 5) and the Theorem-3 one-step check; with ``shuffled``, all of it again on the
same held-out examples with each response's tokens shuffled (Corollary 5). The table and the plot
are drawn by ``wave_table``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import mlx.core as mx

from cherry_mlx.data.categories import LEVELS
from cherry_mlx.data.shuffle import shuffle_batch
from cherry_mlx.evaluation.config import EvalConfig
from cherry_mlx.evaluation.coupling import measure_coupling
from cherry_mlx.evaluation.wave import SplitLoss, WaveReport, split_losses
from cherry_mlx.evaluation.wave_table import format_result, plot_result
from cherry_mlx.fusion.assemble import check_same_tokenizer
from cherry_mlx.models.loading import build_model, load_config, load_model, load_tokenizer, resolve
from cherry_mlx.models.runs import (
    CHECKPOINTS,
    checkpoint_step,
    latest_trained_run,
    run_of,
    step_checkpoint,
    step_dir,
)
from cherry_mlx.training.data import default_data_dir, load_split, valid_batches


# -- locating checkpoints ------------------------------------------------------------------------
@dataclass
class Target:
    """A model directory and, when it belongs to a run, the run and the step it was saved at."""

    path: Path
    run: Optional[Path] = None
    step: Optional[int] = None


def resolve_target(name: Optional[str]) -> Target:
    if name is None:
        run = latest_trained_run()
        if run is None:
            raise FileNotFoundError(
                "no trained run in runs/: train one (cherry-mlx train) or name a model"
            )
        name = str(run)
    path = resolve(name)
    return Target(path=path, run=run_of(path), step=checkpoint_step(path))


@dataclass
class InitOf:
    """The initial weights of a from-scratch run, rebuilt from its train_config.json.

    The trainer saves no step-0 checkpoint; it seeds MLX's PRNG with ``seed`` and builds the preset
    (``training.setup``), so the same two calls rebuild the step-0 weights bit for bit. The
    trainer's own step-0 eval row (evals.jsonl) is checked against it in ``run_eval``.
    """

    run: Path
    preset: str
    seed: int

    def __str__(self) -> str:
        return f"init of {self.run} (preset {self.preset}, seed {self.seed})"

    def build(self):
        mx.random.seed(self.seed)
        model = build_model(load_config(resolve(self.preset)))
        mx.eval(model.parameters())
        return model


def default_baseline(target: Target):
    """The baseline of a run: its step-0 checkpoint if kept; for a fine-tune, the model it
    started from; for a from-scratch run, its initial weights rebuilt from (preset, seed)."""
    if target.run is not None:
        zero = step_dir(target.run, 0)
        if (zero / "config.json").is_file():
            return zero
        cfg_file = Path(target.run) / "train_config.json"
        if not cfg_file.is_file():
            cfg_file = target.path / "train_config.json"
        if cfg_file.is_file():
            tc = json.loads(cfg_file.read_text())
            if tc.get("model"):
                return Path(tc["model"])
            if tc.get("preset"):
                return InitOf(Path(target.run), tc["preset"], int(tc.get("seed", 0)))
    raise ValueError(
        f"no baseline for {target.path}: it is not part of a training run; pass --baseline "
        "CKPT (the initial model)"
    )


def resolve_full(full_run: str, step: Optional[int]) -> Path:
    """The full-sequence comparison at the matched step (a directory that is a checkpoint is used
    as given)."""
    path = Path(full_run)
    if (path / CHECKPOINTS).is_dir() and step is not None:
        return step_checkpoint(path, step)
    return resolve(full_run)


# -- data ----------------------------------------------------------------------------------------
def heldout_batches(cfg: EvalConfig, tokenizer) -> List[dict]:
    """Batches (losses.py contract) of the held-out split in file order: exactly the batches the
    trainer evaluates on (``training.data``), so its curves and this table agree."""
    path = Path(cfg.data) if cfg.data else default_data_dir()
    if path.is_dir():
        path = path / f"{cfg.split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"held-out data {path} does not exist; build it (cherry-mlx data build) or pass --data"
        )
    encoded, _, _ = load_split(path, tokenizer, cfg.seq_len)
    batches = valid_batches(encoded, cfg.batch_size, cfg.seq_len)
    if cfg.max_batches >= 0:
        batches = batches[: cfg.max_batches]
    if not batches:
        raise ValueError(f"{path} gave no batches; check that it has examples with responses")
    return batches


# -- the measurement -----------------------------------------------------------------------------
@dataclass
class Section:
    """One data condition (coherent or shuffled): the split losses, metrics and coupling."""

    wave: WaveReport
    coupling: Optional[dict] = None

    def to_dict(self) -> dict:
        return {**self.wave.to_dict(), "coupling": self.coupling}


@dataclass
class EvalResult:
    model: str
    step: Optional[int]
    baseline: Optional[str]
    full: Optional[str]
    level: str
    sections: Dict[str, Section] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "step": self.step,
            "baseline": self.baseline,
            "full_sequence": self.full,
            "level": self.level,
            "notes": self.notes,
            **{k: v.to_dict() for k, v in self.sections.items()},
        }


def _check_same_vocabulary(model_path, base_path, full_path) -> None:
    """W compares losses of the same token ids: a baseline (or full run) with another tokenizer
    would be scored on ids that mean other text, so refuse it as fuse and distill do."""
    others = [p for p in (base_path, full_path) if p is not None and not isinstance(p, InitOf)]
    if not others:
        return
    paths = [resolve(model_path), *(resolve(p) for p in others)]
    check_same_tokenizer(paths, [load_config(p) for p in paths], why=(
        "the model and --baseline/--full-run",
        "the losses are compared token by token: pass a baseline that uses the model's "
        "tokenizer (its step-0 checkpoint, or the model it was fine-tuned from)",
    ))  # fmt: skip


def _load(path):
    if isinstance(path, InitOf):
        model = path.build()
        model.eval()
        return model
    model, _ = load_model(path)
    model.eval()
    return model


def measure(
    model,
    batches,
    level: int,
    categories=None,
    base=None,
    full=None,
    coupling: bool = False,
    coupling_batches: int = 4,
    etas=None,
    supervised_fraction=None,
) -> Section:
    """Split losses of ``model`` (and of the ``base``/``full`` models) on ``batches``; metrics."""
    now = split_losses(model, batches, level, categories)
    b = split_losses(base, batches, level, categories) if base is not None else None
    f = split_losses(full, batches, level, categories) if full is not None else None
    section = Section(WaveReport(now=now, base=b, full=f, supervised_fraction=supervised_fraction))
    if coupling:
        c = measure_coupling(model, batches[:coupling_batches], level, categories, etas=etas)
        section.coupling = c.to_dict()
    return section


def run_eval(cfg: EvalConfig) -> EvalResult:
    """Everything ``cherry-mlx eval`` prints, as an ``EvalResult`` (also written as JSON/PNG)."""
    target = resolve_target(cfg.model)
    base_path = cfg.baseline if cfg.baseline else default_baseline(target)
    full_path = resolve_full(cfg.full_run, target.step) if cfg.full_run else None
    _check_same_vocabulary(target.path, base_path, full_path)
    tokenizer = load_tokenizer(cfg.tokenizer or target.path)
    batches = heldout_batches(cfg, tokenizer)
    level = LEVELS[cfg.level]
    model, base = _load(target.path), _load(base_path)
    full = _load(full_path) if full_path is not None else None
    result = EvalResult(
        model=str(target.path),
        step=target.step,
        baseline=str(base_path),
        full=str(full_path) if full_path else None,
        level=cfg.level,
    )
    conditions = {"coherent": batches}
    if cfg.shuffled:
        conditions["shuffled"] = [shuffle_batch(b, cfg.seed + i) for i, b in enumerate(batches)]
    for name, bs in conditions.items():
        result.sections[name] = measure(
            model,
            bs,
            level,
            cfg.categories,
            base=base,
            full=full,
            coupling=cfg.coupling,
            coupling_batches=cfg.coupling_batches,
            etas=cfg.etas,
            supervised_fraction=cfg.supervised_fraction,
        )
    if isinstance(base_path, InitOf):
        result.notes.append(
            _check_init(base_path, result.sections["coherent"].wave.base, cfg, base, tokenizer)
        )
    if cfg.json_out:
        Path(cfg.json_out).write_text(json.dumps(json_clean(result.to_dict()), indent=2) + "\n")
    plot = cfg.plot or (str(target.run / "eval_wave.png") if target.run else None)
    if plot:
        plot_result(result, plot)
    return result


def _trainer_eval_settings(run: Path) -> Optional[dict]:
    """(data, batch_size, seq_len, eval_batches) the trainer evaluated ``run`` with, or None."""
    f = run / "train_config.json"
    if not f.is_file():
        return None
    try:
        tc = json.loads(f.read_text())
        return {
            "data": tc.get("data"),
            "batch_size": int(tc["batch_size"]),
            "seq_len": int(tc["seq_len"]),
            "max_batches": int(tc.get("eval_batches", -1)),
        }
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _check_init(init: InitOf, measured: SplitLoss, cfg=None, model=None, tokenizer=None) -> str:
    """Compare the rebuilt init with the trainer's own step-0 eval. The trainer evaluated its
    first ``eval_batches`` held-out batches at its own batch size and length; when this eval used
    other settings the init is measured again on exactly those batches, so that a "differs" means
    the weights (preset, seed) or the data changed, never just a different sample of examples."""
    rows = []
    f = init.run / "evals.jsonl"
    if f.is_file():
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    zero = next((r for r in rows if r.get("step") == 0), None)
    if zero is None:
        return f"baseline: {init} (no step-0 eval in the run to check it against)"
    total, where = measured.total, "on this eval's batches"
    trainer = _trainer_eval_settings(init.run)
    mine = None
    if cfg is not None:
        mine = dict(
            data=cfg.data, batch_size=cfg.batch_size, seq_len=cfg.seq_len,
            max_batches=cfg.max_batches,
        )  # fmt: skip
    if trainer is not None and mine is not None and trainer != mine and model is not None:
        try:
            batches = heldout_batches(EvalConfig(split=cfg.split, **trainer), tokenizer)
        except (FileNotFoundError, ValueError):
            batches = None  # e.g. a run whose held-out set was cut from train.jsonl
        if batches:
            total = split_losses(model, batches, LEVELS[cfg.level]).total
            where = (
                f"on the trainer's {len(batches)} held-out batches of {trainer['batch_size']}"
                f"x{trainer['seq_len']}"
            )
    same = math.isclose(zero["total"], total, rel_tol=1e-4)
    verdict = (
        "reproduces" if same else "DOES NOT reproduce (preset, seed or data changed since the run?)"
    )
    return (
        f"baseline: {init}; rebuilt, it {verdict} the trainer's step-0 eval: total loss "
        f"{total:.4f} vs {zero['total']:.4f} {where}"
    )


def json_clean(obj):
    """NaN/inf -> null, so the JSON is strict (NaN is not JSON)."""
    if isinstance(obj, dict):
        return {k: json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def eval_command(cfg: EvalConfig, log=print) -> EvalResult:
    """``cherry-mlx eval``: ``run_eval`` and print its table."""
    result = run_eval(cfg)
    log(format_result(result))
    if cfg.json_out:
        log(f"wrote {cfg.json_out}")
    return result
