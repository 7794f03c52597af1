"""Command-line options generated from settings dataclasses, so each setting is written once.

Every option defaults to ``None`` ("not given"): the command passes only the given values on, and
the dataclass (or the settings file, or a resumed run) supplies the rest. Reading the fields
imports no MLX, so ``--help`` stays instant.
"""

from __future__ import annotations

import inspect
from typing import Callable, List, Optional

import typer


def _option_type(tp):
    """Typer-friendly Optional[...] type for a dataclass field type (given as a string)."""
    s = str(tp)
    if "bool" in s:
        return Optional[bool]
    if "int" in s and "List" not in s:
        return Optional[int]
    if "float" in s:
        return Optional[float]
    return Optional[str]


def option_params(specs) -> List[inspect.Parameter]:
    """Keyword parameters with ``typer.Option``s for ``field_specs(...)`` rows."""
    params = []
    for name, tp, default, help_text, flags in specs:
        otype = _option_type(tp)
        if otype is Optional[bool]:
            flags = [f"{flags[0]}/--no-{flags[0][2:]}", *flags[1:]]
        shown = ",".join(default) if isinstance(default, list) else default
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=otype,
                default=typer.Option(
                    None, *flags, help=help_text,
                    show_default=str(shown) if shown not in (None, []) else False,
                ),
            )
        )  # fmt: skip
    return params


def with_params(fn: Callable, params: List[inspect.Parameter]) -> Callable:
    """Give ``fn(**kwargs)`` the signature typer reads its options from."""
    fn.__signature__ = inspect.Signature(params)
    fn.__annotations__ = {p.name: p.annotation for p in params}
    return fn


def given(kwargs: dict) -> dict:
    """The options the user gave (typer passes None for the others)."""
    return {k: v for k, v in kwargs.items() if v is not None}


def phase_params(cls, skip=()) -> List[inspect.Parameter]:
    """Options of a ``PhaseConfig``: its own fields, then the training settings it exposes with
    the phase's defaults shown."""
    from cherry_mlx.training.config import TrainConfig, field_specs

    own = [
        s for s in field_specs(cls) if s[0] not in ("train", *skip)
    ]  # fmt: skip
    train = field_specs(TrainConfig, cls.TRAIN_OPTIONS, defaults=cls.default_train())
    return option_params(own) + option_params(train)
