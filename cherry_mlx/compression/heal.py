"""``compress``: merge -> SGT heal -> unroll -> SGT heal, with the loss after every stage.

Order matters (paper Section 6.1): unrolling a freshly merged model amplifies an incoherent
representation (+212-346% loss in the paper), so the merged model is healed first
(``pre_unroll_steps``, paper 100), then unrolled, then healed again (``heal_steps``, paper 500).
Healing is the project's SGT trainer (``training.trainer.train``) with the model passed in; each
stage is an ordinary run directory under the output (curves, metrics, checkpoints).

Recovered fraction of the gap (the paper's Table C.1 "recovery", e.g. 24Lx2: (13.19 - 2.93) /
(13.19 - 0.994) = 84%): ``R = (L_merged - L_final) / (L_merged - L_source)`` on held-out response
tokens; 1 means the compressed model is back at the source model's loss. The paper's 0.994 is
the loss of the model that was merged, itself trained on the data the healing uses; a source that
has never seen that data (a pretrained model healed on chat data) gains from the healing steps
alone, so there the fair reference is the source trained for the same steps (``--control``), as
``repro``'s compress stage reports beside this one.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import mlx.core as mx
from mlx.utils import tree_flatten

from cherry_mlx.compression.config import CompressConfig
from cherry_mlx.compression.merge import _check_mergeable, describe_groups, plan_groups
from cherry_mlx.compression.prune import shrink
from cherry_mlx.compression.recurrent import (
    Recurrence,
    current_recurrence,
    plan_recurrence,
    unroll,
)
from cherry_mlx.compression.report import write_report
from cherry_mlx.models.loading import build_model, load_model, resolve, save_model
from cherry_mlx.models.outputs import check_output, remove_own
from cherry_mlx.models.runs import RUNS_DIR, latest_run, source_name
from cherry_mlx.training.data import valid_batches
from cherry_mlx.training.evaluate import loss_breakdown
from cherry_mlx.training.prepare import check_vocab, prepare
from cherry_mlx.training.trainer import train


@dataclass
class Stage:
    name: str
    loss: float
    gt: float = float("nan")
    non_gt: float = float("nan")
    params: int = 0
    unique_layers: int = 0
    effective_depth: int = 0
    seconds: float = 0.0
    run_dir: Optional[str] = None


@dataclass
class CompressResult:
    out_dir: Path
    stages: List[Stage] = field(default_factory=list)
    recovered: float = float("nan")  # of the merge gap, after the last stage
    recovered_pre_unroll: float = float("nan")
    control: Optional[Stage] = None  # the source after the same SGT steps (``--control``)
    model: Any = None
    config: Dict[str, Any] = field(default_factory=dict)

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "stages": [asdict(s) for s in self.stages],
            "recovered": self.recovered,
            "recovered_pre_unroll": self.recovered_pre_unroll,
            "control": asdict(self.control) if self.control else None,
            "config": self.config,
        }


def recurrence_of(cfg: CompressConfig, n_unique: int) -> Recurrence:
    """The validated prelude/core/coda split of ``n_unique`` merged layers."""
    return plan_recurrence(n_unique, cfg.loops, cfg.prelude, cfg.coda, cfg.layout)


def recovered_fraction(source: float, merged: float, healed: float) -> float:
    """Share of the merge gap closed: (L_merged - L_healed) / (L_merged - L_source)."""
    gap = merged - source
    return (merged - healed) / gap if gap > 0 else float("nan")


def gap_text(source: float, merged: float, recovered: float, healed: bool) -> str:
    """The recovered share as printed: "n/a" always says why, comparing the two losses."""
    if not healed:
        return f"n/a (--no-heal: merged loss {merged:.4f} vs source {source:.4f}, nothing healed)"
    if recovered == recovered:
        return f"{recovered:.1%}"
    if merged <= source:
        return f"n/a (merging did not raise the loss: merged {merged:.4f} <= source {source:.4f})"
    return f"n/a (merged loss {merged:.4f} vs source {source:.4f})"


def param_count(model) -> int:
    return sum(v.size for _, v in tree_flatten(model.parameters()))


class Data:
    """Tokenizer, encoded train/valid examples and fixed held-out batches, loaded once."""

    def __init__(
        self,
        tokenizer=None,
        tokenizer_dir=None,
        train=None,
        valid=None,
        batch_size: int = 16,
        seq_len: int = 256,
    ):
        self.tokenizer, self.tokenizer_dir = tokenizer, tokenizer_dir
        self.train, self.valid = train, valid
        self.batches = valid_batches(valid, batch_size, seq_len)
        self.batch_size, self.seq_len = batch_size, seq_len

    def calibration(self, n_batches: int = 8) -> list:
        """The first ``n_batches`` batches of training data, to measure layer redundancy on
        (pruning): never the held-out batches the pruned model is scored on."""
        src = self.train
        if hasattr(src, "batches"):  # CycleBatches: read its list, do not advance it
            head = list(src.batches[:n_batches])
        elif isinstance(src, (list, tuple)):  # encoded examples
            head = list(src[: n_batches * self.batch_size])
        else:
            raise ValueError(
                "pruning needs calibration batches: pass the training data as encoded examples "
                "or CycleBatches, not a one-shot iterator"
            )
        return valid_batches(head, self.batch_size, self.seq_len)

    @classmethod
    def load(cls, cfg: CompressConfig, model_dir: Optional[Path], vocab: int = 0) -> "Data":
        """``vocab``: the model's embedding rows; a tokenizer with more ids fails here."""
        prep = prepare(
            cfg.data,
            cfg.seq_len,
            cfg.tokenizer,
            [str(model_dir)],
            verbose=False,
            check=lambda tok: check_vocab(tok, cfg.tokenizer or model_dir, vocab),
        )
        return cls(
            prep.tokenizer, prep.tokenizer_dir, prep.train, prep.valid, cfg.batch_size, cfg.seq_len
        )


def evaluate(model, data: Data, name: str, eval_batches: int = -1, seconds: float = 0.0) -> Stage:
    """Held-out loss on response tokens (total, GT, non-GT) of ``model`` as a named stage."""

    model.eval()
    row = loss_breakdown(model, data.batches, max_batches=eval_batches)
    rec = current_recurrence(
        {"num_hidden_layers": model.args.num_hidden_layers, "recurrence": model.args.recurrence}
    )
    return Stage(
        name=name,
        loss=row["total"],
        gt=row["gt"],
        non_gt=row["non_gt"],
        params=param_count(model),
        unique_layers=rec.unique,
        effective_depth=rec.effective_depth,
        seconds=seconds,
    )


def heal(model, cfg: CompressConfig, data: Data, steps: int, run_dir: Path, name: str):
    """``steps`` SGT updates of ``model`` in place through the project trainer; returns seconds."""

    tcfg = cfg.stage(
        steps, name, run_dir, report_every=max(1, min(10, steps // 5)), eval_every=0,
        tokenizer=str(data.tokenizer_dir) if data.tokenizer_dir else None,
    )  # fmt: skip
    if cfg.force:  # a previous compress into this --out left this stage run: ours to replace
        remove_own(Path(run_dir) / name, "the stage run of a previous compress")
    t0 = time.perf_counter()
    # valid_data=[]: the trainer skips its own evals, ours (``evaluate``) bracket each stage
    result = train(
        tcfg, model=model, tokenizer=data.tokenizer, train_data=data.train, valid_data=[]
    )
    trained = result.model if result.model is not None else model
    if trained is not model:  # the trainer may hand back another object: keep ours in sync
        model.update(trained.parameters())
    mx.eval(model.parameters())
    return time.perf_counter() - t0, Path(result.run_dir)


def run_pipeline(
    source,
    source_cfg: Dict[str, Any],
    cfg: CompressConfig,
    data: Data,
    out_dir: Path,
    log=print,
    source_stage: Optional[Stage] = None,
    merged_state=None,
    control: Optional[Stage] = None,
) -> CompressResult:
    """Merge, heal, unroll, heal ``source``; ``merged_state`` = (model, config, stages) reuses a
    merged-and-healed model (sweeps over loop counts share it)."""
    res = CompressResult(out_dir=Path(out_dir))
    out_dir = Path(out_dir)
    if merged_state is None:  # check the whole plan before spending time on evaluation/healing
        _check_mergeable(source_cfg, {})
        groups = plan_groups(len(source.layers), cfg.to, cfg.factor, cfg.groups)
        recurrence_of(cfg, len(groups))
    src = source_stage or evaluate(source, data, "source", cfg.eval_batches)
    res.stages.append(src)
    log(f"source: {src.unique_layers} layers, loss {src.loss:.4f}")
    if merged_state is None:
        merged_state = merge_and_heal(source, source_cfg, cfg, data, out_dir, log)
    merged, mcfg, merged_stages = merged_state
    res.stages += merged_stages
    rec = recurrence_of(cfg, mcfg["num_hidden_layers"])  # validate
    t0 = time.perf_counter()
    looped, lcfg = unroll(merged, mcfg, rec.loops, rec.prelude, rec.coda)
    # (the looped model shares the merged model's arrays; healing replaces them in ``looped``
    # only, since optimizer updates create new arrays, so a shared merge state stays intact)
    if cfg.loops > 1:
        st = evaluate(looped, data, "unrolled", cfg.eval_batches, time.perf_counter() - t0)
        res.stages.append(st)
        log(f"unrolled {looped.args.effective_depth} effective layers: loss {st.loss:.4f}")
    if cfg.heal and cfg.heal_steps > 0:
        secs, rdir = heal(
            looped,
            cfg,
            data,
            cfg.heal_steps,
            out_dir,
            "heal-2-unrolled" if cfg.loops > 1 else "heal-2-merged",
        )
        st = evaluate(looped, data, "healed", cfg.eval_batches, secs)
        st.run_dir = str(rdir)
        res.stages.append(st)
        log(f"after {cfg.heal_steps} SGT steps: loss {st.loss:.4f} ({secs:.0f}s)")
    res.model, res.config = looped, lcfg
    if control is None and cfg.control and cfg.heal:
        control = control_stage(source, source_cfg, cfg, data, out_dir, log)
    res.control = control
    merged_loss = res.stage("merged").loss
    if cfg.heal:  # without healing nothing was recovered: the fraction stays NaN ("n/a")
        res.recovered = recovered_fraction(src.loss, merged_loss, res.stages[-1].loss)
    if any(s.name == "merged-healed" for s in res.stages):
        res.recovered_pre_unroll = recovered_fraction(
            src.loss, merged_loss, res.stage("merged-healed").loss
        )
    return res


def control_stage(source, source_cfg, cfg: CompressConfig, data: Data, out_dir: Path, log=print):
    """The uncompressed source trained for the same total SGT steps as the two healing stages
    (one schedule over all steps): what the compressed model should be compared with when the
    source itself is still improving."""

    steps = cfg.pre_unroll_steps + cfg.heal_steps
    copy = build_model(source_cfg)
    copy.load_weights(list(tree_flatten(source.parameters())))
    secs, rdir = heal(copy, cfg, data, steps, out_dir, "control-source")
    st = evaluate(copy, data, f"source + {steps} SGT steps", cfg.eval_batches, secs)
    st.run_dir = str(rdir)
    log(f"control: source after {steps} SGT steps: loss {st.loss:.4f}")
    return st


def merge_and_heal(source, source_cfg, cfg: CompressConfig, data: Data, out_dir: Path, log=print):
    """Stage 1: merge, evaluate, and (unless --no-heal) SGT-heal the merged model."""
    groups = plan_groups(len(source.layers), cfg.to, cfg.factor, cfg.groups)
    t0 = time.perf_counter()
    calib = [] if cfg.method == "average" else data.calibration()
    merged, mcfg = shrink(source, source_cfg, groups, cfg.method, calib)
    mx.eval(merged.parameters())
    stages = [evaluate(merged, data, "merged", cfg.eval_batches, time.perf_counter() - t0)]
    how = "merged" if cfg.method == "average" else f"{cfg.method}: kept {mcfg['merge_map']} of"
    log(f"{how} {len(source.layers)} -> {len(groups)} layers: loss {stages[0].loss:.4f}")
    if cfg.heal and cfg.pre_unroll_steps > 0:
        secs, rdir = heal(merged, cfg, data, cfg.pre_unroll_steps, out_dir, "heal-1-merged")
        st = evaluate(merged, data, "merged-healed", cfg.eval_batches, secs)
        st.run_dir = str(rdir)
        stages.append(st)
        log(f"after {cfg.pre_unroll_steps} SGT steps before unrolling: loss {st.loss:.4f}")
    return merged, mcfg, stages


def compress(cfg: CompressConfig, log=print, data: Optional[Data] = None) -> CompressResult:
    """The ``cherry-mlx compress`` job: load, merge/heal/unroll/heal, save model + report."""

    model_name = cfg.model or latest_run(require_model=True)
    if model_name is None:
        raise FileNotFoundError("no model given and no runs/ yet: pass MODEL or train first")
    model_dir = resolve(model_name)
    source, source_cfg = load_model(model_dir)
    if cfg.loops > 1 and not cfg.heal:
        log(
            "note: --no-heal unrolls a freshly merged model; the paper found this raises loss "
            "(heal with --pre-unroll-steps first)"
        )
    out_dir = Path(cfg.out) if cfg.out else RUNS_DIR / f"{source_name(model_dir)}-{cfg.label()}"
    check_output(out_dir, [model_dir], cfg.force, "--out")
    # bad --to/--groups/--loops fail here, before any data is read
    groups = plan_groups(len(source.layers), cfg.to, cfg.factor, cfg.groups)
    recurrence_of(cfg, len(groups))
    if describe_groups(groups):
        log(describe_groups(groups))
    data = data or Data.load(cfg, model_dir, source_cfg.get("vocab_size", 0))
    res = run_pipeline(source, source_cfg, cfg, data, out_dir, log)
    res.config = dict(res.config)
    save_model(res.model, out_dir / "model", res.config, data.tokenizer_dir)
    write_report(res, cfg, out_dir)
    gap = gap_text(res.stage("source").loss, res.stage("merged").loss, res.recovered, cfg.heal)
    log(f"recovered fraction of the merge gap: {gap}; model in {out_dir / 'model'}")
    (out_dir / "compress_config.json").write_text(
        json.dumps(asdict(cfg), indent=2, ensure_ascii=False) + "\n"
    )
    return res
