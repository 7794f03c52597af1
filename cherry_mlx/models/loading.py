"""Find, build, load and save models: presets in ``weights/``, local HF-layout dirs, the hub.

Loading goes through ``mlx_lm.utils.load_model`` with our classes, so quantised checkpoints,
``sanitize`` and strict weight checks behave exactly as in mlx-lm. Saving is atomic: everything is
written to a temporary sibling directory that is renamed into place, so a kill never leaves a
half-written model behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from cherry_mlx._io import read_json
from cherry_mlx.models.families import GEMMA, GLOBAL, SLIDING, WINDOWED, check_family
from cherry_mlx.models.gguf import cached_import, gguf_source
from cherry_mlx.models.llama import Model, ModelArgs
from cherry_mlx.models.model_file import model_file_text
from cherry_mlx.models.moee import moee_classes
from cherry_mlx.models.outputs import TOKENIZER_FILES, make_tmp_dir, replace_dir  # noqa: F401
from cherry_mlx.models.presets import (  # noqa: F401
    DEFAULT_PRESET,
    REPO_ROOT,
    WEIGHTS_DIR,
    list_presets,
    presets_hint,
)
from cherry_mlx.models.runs import resolve_run_checkpoint
from cherry_mlx.models.validate import check_finite_weights, check_model_config

# Self-contained model code that lets mlx_lm.load build our recurrent/MTP/MoEE models
# (config.json "model_file"; see models.model_file).
MODEL_FILE = "cherry_model.py"


class ModelNotFound(ValueError):
    pass


def _looks_like_repo_id(name: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", name)) and not name.startswith(".")


def resolve(name_or_path: str | os.PathLike) -> Path:
    """Map a preset name, a local directory or a hub repo id to a local directory."""
    name = str(name_or_path)
    if gguf_source(name) is not None:  # a .gguf file or a packaged short name: convert once
        return cached_import(name)
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        found = resolve_run_checkpoint(path)  # a run dir -> its best/latest step
        if found is not None:
            return found
        raise ModelNotFound(f"{path} has no config.json: not a model or run directory")
    if (WEIGHTS_DIR / name / "config.json").is_file():
        return WEIGHTS_DIR / name
    if _looks_like_repo_id(name) and not path.exists():
        from huggingface_hub import snapshot_download

        try:
            return Path(
                snapshot_download(
                    name,
                    allow_patterns=[
                        "*.json",
                        "*.safetensors",
                        "*.model",
                        "*.jinja",
                        "*.py",
                        "*.txt",
                    ],
                )
            )
        except Exception as err:  # offline, unknown repo, gated ...
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ModelNotFound(
                f"{name!r} is not a local directory, and fetching it from the hub failed "
                f"({first}); pass an existing model/run directory, a preset or a reachable hub "
                f"id ({presets_hint()})"
            ) from None
    raise ModelNotFound(f"unknown model {name!r}: not a directory, and {presets_hint()}")


def load_config(path: Path) -> Dict[str, Any]:
    """The checked ``config.json`` of a model directory (one-line errors, see models.validate)."""
    cfg_file = Path(path) / "config.json"
    if not cfg_file.exists():
        raise ModelNotFound(f"{cfg_file} is missing")
    return check_model_config(read_json(cfg_file, "model config"), str(cfg_file))


def model_classes(config: Dict[str, Any]):
    """Pick (Model, ModelArgs) for a config; cherry extensions are keys on a family config."""
    check_family(config.get("model_type", "llama"))
    if config.get("moee"):  # a fused Mixture of Efficient Experts
        return moee_classes(config)
    return Model, ModelArgs


def build_model(config: Dict[str, Any]) -> nn.Module:
    """Instantiate a model from a config; parameters stay lazy (nothing allocated until eval)."""
    model_cls, args_cls = model_classes(config)
    return model_cls(args_cls.from_dict(config))


def load_model(
    name_or_path: str | os.PathLike, lazy: bool = False, strict: bool = True
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Load weights from a model directory (any of ``resolve``'s forms)."""
    from mlx_lm.utils import load_model as mlx_lm_load_model

    path = resolve(name_or_path)
    if not list(path.glob("model*.safetensors")):
        raise ModelNotFound(
            f"{path} has a config but no model*.safetensors; train it first "
            f"(cherry-mlx train --preset {path}) or point at a trained run"
        )
    saved = load_config(path)
    # model_file=None: use our classes directly instead of executing the shim.
    try:
        model, config = mlx_lm_load_model(
            path,
            lazy=lazy,
            strict=strict,
            model_config={"model_file": None},
            get_model_classes=model_classes,
        )
    except RuntimeError as err:  # a truncated or garbage weights file: name it, no traceback
        if "safetensors" not in str(err):
            raise
        reason = str(err).splitlines()[0].replace("[load_safetensors] ", "")
        raise ValueError(
            f"{path}: its model*.safetensors cannot be read ({reason}); the weights file is "
            "damaged: copy, download or train it again"
        ) from None
    config.pop("model_file", None)
    if not lazy:
        check_finite_weights(model, str(path))
    if "model_file" in saved:
        config["model_file"] = saved["model_file"]
    return model, config


def load_tokenizer(name_or_path: str | os.PathLike):
    """mlx-lm's TokenizerWrapper over the directory's HF tokenizer files."""
    from mlx_lm.utils import load_tokenizer as mlx_lm_load_tokenizer

    path = resolve(name_or_path)
    if not (path / "tokenizer.json").exists() and not (path / "tokenizer.model").exists():
        raise ModelNotFound(f"{path} has no tokenizer files (tokenizer.json / tokenizer.model)")
    # as mlx_lm.load does: every EOS of config.json ends a reply (e.g. Gemma's <end_of_turn>)
    cfg_file = path / "config.json"
    eos = read_json(cfg_file, "model config").get("eos_token_id") if cfg_file.is_file() else None
    if isinstance(eos, list):
        return mlx_lm_load_tokenizer(path, eos_token_ids=eos)
    return mlx_lm_load_tokenizer(path)


def needs_model_file(config: Dict[str, Any]) -> bool:
    """Plain mlx-lm cannot build configs with cherry extensions, nor a Gemma 3 whose layer kinds
    left its 6-periodic pattern (a merged one): it would silently use the pattern."""
    if any(config.get(k) for k in ("recurrence", "mtp", "moee")):
        return True
    types = config.get("layer_types")
    if config.get("model_type") == "gemma3_text" and types:
        k = int(config.get("sliding_window_pattern") or 6)
        return types != [GLOBAL if (i + 1) % k == 0 else SLIDING for i in range(len(types))]
    return False


def save_model(
    model: nn.Module,
    out_dir: str | os.PathLike,
    config: Dict[str, Any],
    tokenizer_dir: Optional[str | os.PathLike] = None,
    extra_files: Optional[Dict[str, str]] = None,
) -> Path:
    """Write ``model.safetensors`` + ``config.json`` (+ tokenizer files) atomically.

    An existing ``out_dir`` loses only entries with the names written here (``outputs``); callers
    taking a user's ``-o`` check it first with ``outputs.check_output``."""
    out_dir = Path(out_dir)
    tmp = make_tmp_dir(out_dir)
    try:
        weights = dict(tree_flatten(model.parameters()))
        mx.save_safetensors(str(tmp / "model.safetensors"), weights, metadata={"format": "mlx"})
        config = dict(config)
        if needs_model_file(config):
            config["model_file"] = MODEL_FILE
            (tmp / MODEL_FILE).write_text(model_file_text(config))
        else:
            config.pop("model_file", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        if tokenizer_dir is not None:
            for name in TOKENIZER_FILES:
                src = Path(tokenizer_dir) / name
                if src.is_file():
                    shutil.copy2(src, tmp / name)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def model_config(model: nn.Module, base: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The HF-style config of a model's current args (``base`` keeps extra keys, e.g. rope)."""
    cfg = dict(base or {})
    cfg.update({k: v for k, v in asdict(model.args).items() if v is not None})
    # rebuilt from num_hidden_layers (and sliding_window), except where a family's default
    # would differ (Gemma); plain mlx-lm's llama needs a global layer in any list it reads
    kinds = set(cfg.get("layer_types") or ())
    windowed = cfg.get("model_type") in WINDOWED and cfg.get("sliding_window")
    if cfg.get("model_type") not in GEMMA and (
        kinds <= {GLOBAL} or (windowed and kinds == {SLIDING})
    ):
        cfg.pop("layer_types", None)
    return cfg
