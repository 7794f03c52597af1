"""Training settings: one dataclass with help text, resolved as command line > YAML/JSON > defaults.

The resolved settings are written next to every checkpoint (``train_config.json``) so a run can be
resumed or reproduced from its directory alone. Field metadata carries the help text and, where the
option name differs from the field name, the command-line flag (``lam`` is ``--lambda``); the CLI
builds its options from these fields, so there is exactly one list of settings.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..selection.categories import CATEGORIES, LEVELS

SELECTIONS = ("gt", "random", "loss", "rho1", "all")
BEST_METRICS = ("total", "gt", "non_gt", "loss")


def _f(default, help: str, flag: Optional[str] = None, **kw):
    meta = {"help": help}
    if flag:
        meta["flag"] = flag
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class TrainConfig:
    # what to train
    preset: str = _f("cherry-tiny", "Preset in weights/ trained from scratch (random init).")
    model: Optional[str] = _f(
        None, "Model directory, run or hub id to fine-tune (overrides --preset)."
    )
    tokenizer: Optional[str] = _f(
        None, "Tokenizer directory (default: the model's, else weights/cherry-tiny)."
    )
    data: Optional[str] = _f(
        None, "Directory of train.jsonl, valid.jsonl, test.jsonl (default: the bundled data)."
    )
    name: Optional[str] = _f(None, "Run name: the run is written to runs/NAME/ (default: auto).")
    runs_dir: Optional[str] = _f(None, "Parent directory of runs (default: runs/).")
    resume: Optional[str] = _f(
        None, "Resume a run (run name, run directory or 'latest') from its last checkpoint."
    )
    # the SGT loss (SPEC Eq. 2) and selection controls (Limitation 9)
    select: str = _f(
        "gt",
        "Supervised positions: gt (tagged GT), random / loss / rho1 (the same number of "
        "positions per example chosen at random, by highest loss, by excess loss over "
        "--reference), all (plain full-sequence loss).",
    )
    lam: float = _f(0.7, "λ of L_SGT = λ·L_GT + (1-λ)·L_full (1 = pure GT, warned).", "--lambda")
    level: str = _f("gt", "Supervise level >= gt (1), super (2) or ssgt (3).")
    categories: Optional[List[str]] = _f(
        None, f"Comma-separated GT categories to supervise (default all): {','.join(CATEGORIES)}."
    )
    reference: Optional[str] = _f(None, "Reference model for --select rho1 (directory or run).")
    # multi-token prediction heads (serving: self-speculative decoding; models/mtp.py)
    mtp: int = _f(
        0,
        "Train K MTP heads (added if the model has none; 0 = off); best/ is then "
        "picked by the combined loss unless --best-metric says otherwise.",
    )
    mtp_weight: float = _f(0.3, "β of loss = trunk loss + β·mean MTP head loss.")
    freeze_trunk: bool = _f(False, "Train only the MTP heads (add heads to an existing model).")
    mtp_targets: str = _f(
        "data",
        "MTP head targets: data (true tokens, the paper's oracle MTP) "
        "or trunk (the trunk's greedy tokens: self-distillation for "
        "higher speculative acceptance).",
    )
    # optimisation
    steps: int = _f(300, "Optimizer updates to run.")
    batch_size: int = _f(
        16, "Sequences per micro-batch: the global batch, split over the ranks under mlx.launch."
    )
    seq_len: int = _f(256, "Maximum sequence length (longer examples are truncated).")
    grad_accum: int = _f(1, "Micro-batches accumulated per optimizer update.")
    learning_rate: float = _f(3e-3, "Peak learning rate (after warmup).")
    warmup: int = _f(20, "Linear warmup steps.")
    min_lr_ratio: float = _f(0.1, "Cosine decay ends at learning_rate * min_lr_ratio.")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    grad_clip: float = _f(1.0, "Clip the global gradient norm to this (0 = off).")
    seed: int = _f(0, "Seed of initialisation, data order and random selection.")
    grad_checkpoint: bool = _f(False, "Recompute each block in the backward pass (less memory).")
    # LoRA through mlx-lm's tuner
    lora: bool = _f(
        False, "Train LoRA adapters (mlx-lm's linear_to_lora_layers) instead of all weights."
    )
    lora_rank: int = _f(8, "LoRA rank.")
    lora_scale: float = _f(20.0, "LoRA scale (mlx-lm's 'scale').")
    lora_layers: int = _f(-1, "Number of last blocks given adapters (-1 = all).")
    # reporting, evaluation, checkpoints
    report_every: int = _f(10, "Steps between loss reports (metrics.jsonl has every step).")
    eval_every: int = _f(50, "Steps between evaluations on the valid split (0 = only at the end).")
    eval_batches: int = _f(8, "Valid batches per evaluation (-1 = the whole split).")
    best_metric: str = _f("total", f"Valid metric that picks best/: one of {BEST_METRICS}.")
    save_every: int = _f(100, "Steps between checkpoints (the last step is always saved).")
    keep_checkpoints: int = _f(2, "Step checkpoints kept (older ones are deleted; best/ is kept).")
    demo: bool = _f(True, "After training, answer held-out questions greedily and score them.")
    collective_timeout: float = _f(
        300.0,
        "Multi-rank runs (mlx.launch): seconds a rank waits for the others in one step before "
        "it stops with an error naming them (0 = wait forever).",
    )
    stop_after: Optional[int] = _f(
        None, "Stop (as if killed) after this step, checkpointing it: for resume tests and demos."
    )

    # -- construction ---------------------------------------------------------------------------
    def __post_init__(self):
        self.validate()

    def validate(self) -> "TrainConfig":
        """Check values; raise ValueError naming the option and the fix."""
        if isinstance(self.categories, str):
            self.categories = [c.strip() for c in self.categories.split(",") if c.strip()]
        checks = [
            (self.select in SELECTIONS, f"--select {self.select!r}: use one of {SELECTIONS}"),
            (self.level in LEVELS, f"--level {self.level!r}: use one of {tuple(LEVELS)}"),
            (0.0 <= self.lam <= 1.0, f"--lambda {self.lam}: must be in [0, 1]"),
            (self.best_metric in BEST_METRICS, f"--best-metric: use one of {BEST_METRICS}"),
            (self.steps >= 1, f"--steps {self.steps}: must be >= 1"),
            (self.mtp >= 0 and self.mtp_weight >= 0, "--mtp and --mtp-weight must be >= 0"),
            (self.mtp > 0 or not self.freeze_trunk, "--freeze-trunk needs --mtp K (K >= 1)"),
            (self.mtp_targets in ("data", "trunk"), "--mtp-targets: use data or trunk"),
            (self.batch_size >= 1, f"--batch-size {self.batch_size}: must be >= 1"),
            (self.seq_len >= 2, f"--seq-len {self.seq_len}: must be >= 2"),
            (self.grad_accum >= 1, f"--grad-accum {self.grad_accum}: must be >= 1"),
            (self.learning_rate > 0, f"--learning-rate {self.learning_rate}: must be > 0"),
            (self.warmup >= 0, f"--warmup {self.warmup}: must be >= 0"),
            (self.report_every >= 1, f"--report-every {self.report_every}: must be >= 1"),
            (self.save_every >= 1, f"--save-every {self.save_every}: must be >= 1"),
            (self.keep_checkpoints >= 1, "--keep-checkpoints: must be >= 1"),
            (self.collective_timeout >= 0, "--collective-timeout: must be >= 0 seconds"),
            (
                self.select != "rho1" or bool(self.reference),
                "--select rho1 needs --reference MODEL (the reference checkpoint)",
            ),
            (
                self.select == "rho1" or not self.reference,
                f"--reference is only used by --select rho1 (got --select {self.select}); drop it",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        for c in self.categories or []:
            if c not in CATEGORIES:
                raise ValueError(f"--categories {c!r}: unknown, use some of {','.join(CATEGORIES)}")
        if self.lam == 1.0 and self.select != "all":
            warnings.warn(
                "--lambda 1 trains on the selected tokens only (the paper's 'pure GT' case, which "
                "collapses non-GT tokens); 0.7 is the recommended mix",
                stacklevel=3,
            )
        return self

    @property
    def level_int(self) -> int:
        return LEVELS[self.level]

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def from_dict(cls, d: Dict[str, Any], source: str = "config") -> "TrainConfig":
        """Build from a mapping; unknown keys are an error that lists the known ones."""
        return cls(**canonical(d, source))

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(load_settings_file(path), source=str(path))


def canonical(d: Dict[str, Any], source: str = "config") -> Dict[str, Any]:
    """Field names for a mapping that may use option spellings (``lambda``, ``batch-size``)."""
    known = {f.name for f in fields(TrainConfig)}
    flags = {
        f.metadata["flag"].lstrip("-").replace("-", "_"): f.name
        for f in fields(TrainConfig)
        if "flag" in f.metadata
    }
    out = {}
    for k, v in d.items():
        key = str(k).replace("-", "_")
        key = key if key in known else flags.get(key, key)
        if key not in known:
            raise ValueError(
                f"{source}: unknown training setting {k!r}; known: {', '.join(sorted(known))}"
            )
        out[key] = v
    return out


def load_settings_file(path: str | Path) -> Dict[str, Any]:
    """Read a YAML or JSON settings file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training config {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as err:
        raise ValueError(f"{path} could not be parsed ({err}); fix its syntax") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of setting: value")
    return data


def resolve_config(
    cli: Optional[Dict[str, Any]] = None, config_file: Optional[str | Path] = None
) -> TrainConfig:
    """Command line (non-None values) over the settings file over the defaults.

    With ``resume``, the run's saved ``train_config.json`` is the bottom layer instead of the
    defaults (minus ``stop_after``, which belongs to the interrupted invocation), so
    ``cherry-mlx train --resume RUN`` continues with the settings the run started with.
    """
    merged: Dict[str, Any] = {}
    resume = (cli or {}).get("resume")
    if resume:
        saved = _run_config_file(resume, (cli or {}).get("runs_dir"))
        if saved is not None:
            merged.update(TrainConfig.from_file(saved).to_dict())
            merged.pop("stop_after", None)
    if config_file:
        merged.update(canonical(load_settings_file(config_file), str(config_file)))
    merged.update({k: v for k, v in (cli or {}).items() if v is not None})
    return TrainConfig.from_dict(merged)


def _run_config_file(resume: str, runs_dir: Optional[str]) -> Optional[Path]:
    from .runs import RUNS_DIR, latest_run

    parent = Path(runs_dir) if runs_dir else RUNS_DIR
    run = latest_run(parent) if resume == "latest" else Path(resume)
    if run is not None and not run.is_dir():
        run = parent / resume
    if run is None or not (run / "train_config.json").is_file():
        return None  # train() reports the missing run or checkpoint
    return run / "train_config.json"


def field_specs():
    """(name, type, default, help, flag) per setting, for building command-line options."""
    out = []
    for f in fields(TrainConfig):
        default = f.default if f.default is not MISSING else f.default_factory()
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        out.append((f.name, f.type, default, f.metadata["help"], flag))
    return out
