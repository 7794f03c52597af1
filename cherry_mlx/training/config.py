"""Training settings: one dataclass with help text, resolved as command line > YAML/JSON > defaults.

The resolved settings are written next to every checkpoint (``train_config.json``) so a run can be
resumed or reproduced from its directory alone. Field metadata carries the help text and, where the
option name differs from the field name, the command-line flag (``lam`` is ``--lambda``); the CLI
builds its options from these fields, so there is exactly one list of settings.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from cherry_mlx._io import find_surrogate, loads_json, read_text
from cherry_mlx._settings import setting
from cherry_mlx.data.categories import CATEGORIES, LEVELS
from cherry_mlx.models.presets import DEFAULT_PRESET
from cherry_mlx.models.runs import RUNS_DIR, check_run_name, latest_run, list_checkpoints
from cherry_mlx.training.values import check_fields, coerce

SELECTIONS = ("gt", "random", "loss", "rho1", "all")
OPTIMIZERS = ("adamw", "adafactor", "sgd")
BEST_METRICS = ("total", "gt", "non_gt", "loss")


@dataclass
class TrainConfig:
    # what to train
    preset: str = setting(DEFAULT_PRESET, "Preset in weights/ trained from scratch (random init).")
    model: Optional[str] = setting(
        None, "Model directory, run or hub id to fine-tune (overrides --preset)."
    )
    tokenizer: Optional[str] = setting(
        None, f"Tokenizer directory (default: the model's, else weights/{DEFAULT_PRESET})."
    )
    data: Optional[str] = setting(
        None, "Directory of train.jsonl, valid.jsonl, test.jsonl (default: the bundled data)."
    )
    name: Optional[str] = setting(
        None, "Run name: the run is written to runs/NAME/ (default: auto)."
    )
    runs_dir: Optional[str] = setting(None, "Parent directory of runs (default: runs/).")
    resume: Optional[str] = setting(
        None, "Resume a run (run name, run directory or 'latest') from its last checkpoint."
    )
    # the SGT loss (paper Eq. 2) and selection controls (Limitation 9)
    select: str = setting(
        "gt",
        "Supervised positions: gt (tagged GT), random / loss / rho1 (the same number of "
        "positions per example chosen at random, by highest loss, by excess loss over "
        "--reference), all (plain full-sequence loss).",
    )
    lam: float = setting(
        0.7, "λ of L_SGT = λ·L_GT + (1-λ)·L_full (1 = pure GT, warned).", "--lambda"
    )
    level: str = setting("gt", "Supervise level >= gt (1), super (2) or ssgt (3).")
    categories: Optional[List[str]] = setting(
        None,
        f"Comma-separated GT categories to supervise, of {','.join(CATEGORIES)} (default: all).",
    )
    reference: Optional[str] = setting(
        None, "Reference model for --select rho1 (directory or run)."
    )
    shuffle_responses: bool = setting(
        False,
        "Train on token-shuffled responses (each assistant turn's tokens permuted with their "
        "labels; the Corollary 5 control). Held-out evaluation stays on coherent text.",
    )
    # multi-token prediction heads (serving: self-speculative decoding; models/mtp.py)
    mtp: int = setting(
        0,
        "Train K MTP heads (added if the model has none; 0 = off); best/ is then "
        "picked by the combined loss unless --best-metric says otherwise.",
    )
    mtp_weight: float = setting(0.3, "β of loss = trunk loss + β·mean MTP head loss.")
    freeze_trunk: bool = setting(
        False, "Train only the MTP heads (add heads to an existing model)."
    )
    mtp_targets: str = setting(
        "data",
        "MTP head targets: data (true tokens, the paper's oracle MTP) "
        "or trunk (the trunk's greedy tokens: self-distillation for "
        "higher speculative acceptance).",
    )
    mtp_kind: Optional[str] = setting(
        None,
        "MTP head kind for new heads: sequential (DeepSeek-V3 style, default) or cross "
        "(heads cross-attending to the trunk's hidden states, the paper's description).",
    )
    mtp_init: str = setting(
        "random",
        "How new MTP heads start: random, or trunk (each head's block a copy of the trunk's "
        "last layer, EAGLE-style; better agreement at step 0, worse after 50 steps on "
        "cherry-tiny).",
    )
    mtp_feature_weight: float = setting(
        0.0,
        "Add w·smooth-L1(head k's state, trunk's state at t+k) to each head's loss "
        "(EAGLE's feature regression; 0 = off).",
    )
    mtp_draft_vocab: int = setting(
        0,
        "Draft from the N most frequent response tokens of the training data (EAGLE-3's "
        "reduced vocabulary, stored as mtp.draft_vocab; 0 = full vocabulary).",
    )
    # optimisation
    steps: int = setting(300, "Optimizer updates to run.")
    batch_size: int = setting(
        8, "Sequences per micro-batch: the global batch, split over the ranks under mlx.launch."
    )
    seq_len: int = setting(256, "Maximum sequence length (longer examples are truncated).")
    grad_accum: int = setting(1, "Micro-batches accumulated per optimizer update.")
    learning_rate: float = setting(3e-3, "Peak learning rate (after warmup).")
    warmup: int = setting(20, "Linear warmup steps.")
    min_lr_ratio: float = setting(0.1, "Cosine decay ends at learning_rate * min_lr_ratio.")
    weight_decay: float = setting(0.01, "Weight decay (decoupled for AdamW).")
    optimizer: str = setting(
        "adamw",
        "adamw (2 float32 moments per weight), adafactor (factored second moment, no first: "
        "~0 extra) or sgd (no state): what fits, see cherry-mlx info --batch-size ...",
    )
    grad_clip: float = setting(1.0, "Clip the global gradient norm to this (0 = off).")
    seed: int = setting(0, "Seed of initialisation, data order and random selection.", at_least=0)
    grad_checkpoint: bool = setting(
        False, "Recompute each block in the backward pass (less memory)."
    )
    # LoRA through mlx-lm's tuner
    lora: bool = setting(
        False, "Train LoRA adapters (mlx-lm's linear_to_lora_layers) instead of all weights."
    )
    lora_rank: int = setting(8, "LoRA rank.")
    lora_scale: float = setting(20.0, "LoRA scale (mlx-lm's 'scale').")
    lora_layers: int = setting(-1, "Number of last blocks given adapters (-1 = all).")
    # reporting, evaluation, checkpoints
    report_every: int = setting(10, "Steps between loss reports (metrics.jsonl has every step).")
    eval_every: int = setting(
        50, "Steps between evaluations on the valid split (0 = only at the end)."
    )
    eval_batches: int = setting(8, "Valid batches per evaluation (-1 = the whole split).")
    best_metric: str = setting("total", f"Valid metric that picks best/: one of {BEST_METRICS}.")
    save_every: int = setting(100, "Steps between checkpoints (the last step is always saved).")
    keep_checkpoints: int = setting(
        2, "Step checkpoints kept (older ones are deleted; best/ is kept)."
    )
    demo: bool = setting(True, "After training, answer held-out questions greedily and score them.")
    collective_timeout: float = setting(
        300.0,
        "Multi-rank runs (mlx.launch): seconds a rank waits for the others in one step before "
        "it stops with an error naming them (0 = wait forever).",
    )
    stop_after: Optional[int] = setting(
        None, "Stop (as if killed) after this step, checkpointing it: for resume tests and demos."
    )

    # -- construction ---------------------------------------------------------------------------
    def __post_init__(self):
        self.validate()

    def validate(self) -> "TrainConfig":
        """Check values; raise ValueError naming the option and the fix."""
        check_fields(self)  # types, NaN/inf, bounds
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
            (
                self.mtp_kind in (None, "sequential", "cross"),
                f"--mtp-kind {self.mtp_kind!r}: use sequential or cross",
            ),
            (
                self.mtp_init in ("trunk", "random"),
                f"--mtp-init {self.mtp_init!r}: use trunk or random",
            ),
            (self.mtp_feature_weight >= 0, "--mtp-feature-weight must be >= 0"),
            (
                self.mtp_draft_vocab >= 0 and (self.mtp > 0 or not self.mtp_draft_vocab),
                "--mtp-draft-vocab N needs --mtp K (K >= 1) and N >= 0",
            ),
            (self.batch_size >= 1, f"--batch-size {self.batch_size}: must be >= 1"),
            (self.seq_len >= 2, f"--seq-len {self.seq_len}: must be >= 2"),
            (self.grad_accum >= 1, f"--grad-accum {self.grad_accum}: must be >= 1"),
            (
                self.optimizer in OPTIMIZERS,
                f"--optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}",
            ),
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
        check_run_name(self.name)
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
        """Write-then-rename: a full disk or a kill never leaves a truncated settings file."""
        tmp = Path(path).with_name(f".{Path(path).name}.tmp-{os.getpid()}")
        try:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def from_dict(cls, d: Dict[str, Any], source: str = "config") -> "TrainConfig":
        """Build from a mapping; unknown keys are an error that lists the known ones."""
        return cls(**canonical(d, source))

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        return cls(**typed_settings(load_settings_file(path), str(path)))


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


def typed_settings(d: Dict[str, Any], source: str) -> Dict[str, Any]:
    """A settings file's mapping with field names and each value parsed to its field's type, as
    the command line parses it (``learning_rate: 1e-4`` is a string in YAML 1.1)."""
    types = {f.name: f.type for f in fields(TrainConfig)}
    return {k: coerce(v, types[k], k, source) for k, v in canonical(d, source).items()}


def load_settings_file(path: str | Path) -> Dict[str, Any]:
    """Read a YAML or JSON settings file into a dict."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training config {path} does not exist")
    text = read_text(path, "settings file")
    if path.suffix not in (".yaml", ".yml"):
        data = loads_json(text, str(path))
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            first = " ".join(str(err).split())
            raise ValueError(f"{path} could not be parsed ({first}); fix its syntax") from None
        except RecursionError:
            raise ValueError(f"{path}: YAML nested too deeply to read; flatten it") from None
        data = {} if data is None else data
        bad = find_surrogate(data)
        if bad is not None:
            raise ValueError(
                f"{path}: {bad[0]}: lone surrogate {ascii(bad[1])}; write the character"
            )
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
            for key in ("preset", "model"):  # the weights come from the run: no other model
                new = (cli or {}).get(key)
                if new is not None and new != merged.get(key):
                    raise ValueError(
                        f"--resume {resume} continues a run of {merged.get(key)!r}; "
                        f"--{key} {new} conflicts with it: drop --{key}, or start a new run"
                    )
            for key in ("seq_len", "batch_size"):  # the saved data order is in these batches
                new, flag = (cli or {}).get(key), "--" + key.replace("_", "-")
                if new is not None and new != merged.get(key):
                    raise ValueError(
                        f"--resume {resume}: the run was batched with {flag} {merged.get(key)} "
                        f"and its data position cannot continue with {new}; drop {flag}, or "
                        "start a new run"
                    )
    if config_file:
        merged.update(typed_settings(load_settings_file(config_file), str(config_file)))
    merged.update({k: v for k, v in (cli or {}).items() if v is not None})
    return TrainConfig.from_dict(merged)


def _run_config_file(resume: str, runs_dir: Optional[str]) -> Optional[Path]:
    parent = Path(runs_dir) if runs_dir else RUNS_DIR
    run = latest_run(parent) if resume == "latest" else Path(resume)
    if run is not None and not run.is_dir():
        run = parent / resume
    if run is None or not (run / "train_config.json").is_file():
        return None  # train() reports the missing run or checkpoint
    # a damaged run-level copy (full disk, kill): each checkpoint keeps the same settings
    for f in [
        run / "train_config.json",
        *(c / "train_config.json" for c in list_checkpoints(run)[::-1]),
    ]:
        try:
            TrainConfig.from_file(f)
        except (ValueError, TypeError, FileNotFoundError):
            continue
        if f != run / "train_config.json":
            print(f"note: {run / 'train_config.json'} is damaged; using {f}", file=sys.stderr)
        return f
    raise ValueError(
        f"--resume {resume}: {run / 'train_config.json'} is damaged and no checkpoint has a "
        "readable copy; start a new run instead"
    )


def field_specs(cls=TrainConfig, names: Optional[Sequence[str]] = None, defaults=None):
    """(name, type, default, help, flags, (at_least, at_most)) per documented field of a
    settings dataclass, for building command-line options; ``names`` picks and orders fields,
    ``defaults`` (an instance) supplies the defaults shown (a phase's own training defaults)."""
    by_name = {f.name: f for f in fields(cls) if "help" in f.metadata}
    out = []
    for name in names if names is not None else list(by_name):
        f = by_name[name]
        if defaults is not None:
            default = getattr(defaults, name)
        else:
            default = f.default  # MISSING: a required setting
            if default is MISSING and f.default_factory is not MISSING:
                default = f.default_factory()
        flags = [f.metadata.get("flag") or "--" + f.name.replace("_", "-")]
        flags += [f.metadata["short"]] if "short" in f.metadata else []
        bounds = (f.metadata.get("at_least"), f.metadata.get("at_most"))
        out.append((f.name, f.type, default, f.metadata["help"], flags, bounds))
    return out
