"""Command-line options generated from settings dataclasses, so each setting is written once.

Every option defaults to ``None`` ("not given"): the command passes only the given values on, and
the dataclass (or the settings file, or a resumed run) supplies the rest. Reading the fields
imports no MLX, so ``--help`` stays instant.

One help style for every command: a value's kind as ``INT``/``FLOAT``/``TEXT`` (nothing for a
flag), the default as ``[default: X]`` after the help text (a "(default: X)" written in the help
text included), positional arguments in capitals. A setting that is off by default is a
plain flag (``--force``); one that is on, or decided later (``None``), also has its ``--no-`` form.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Callable, List, Optional

import typer

_METAVARS = {bool: "", int: "INT", float: "FLOAT", str: "TEXT"}
# "(default: X)" / "(default X)" in a help text (X may hold one level of parentheses)
_PROSE_DEFAULT = re.compile(r"\s*\(default:?\s+((?:[^()]|\([^()]*\))*)\)")


def _option_type(tp):
    """Typer-friendly Optional[...] type for a dataclass field type (given as a string)."""
    s = str(tp)
    if "List[float]" in s:  # repeatable: --eta 0.1 --eta 0.2
        return Optional[List[float]]
    if "List[Path]" in s:  # repeatable (a path may hold a comma): -d a.jsonl -d b.txt
        return Optional[List[Path]]
    if "bool" in s:
        return Optional[bool]
    if "int" in s and "List" not in s:
        return Optional[int]
    if "float" in s:
        return Optional[float]
    return Optional[str]


def _metavar(otype, kind) -> str:
    if "List" in str(otype):
        return "PATH" if "Path" in str(otype) else "FLOAT"
    return _METAVARS[kind]


def _shown(default, flag: Optional[str] = None) -> Optional[str]:
    """How a default reads in the help (None: not shown)."""
    if default is None or default is MISSING or default == []:
        return None
    if isinstance(default, bool):
        return flag[2:] if default else f"no-{flag[2:]}"
    if isinstance(default, (list, tuple)):
        return ",".join(str(d) for d in default)
    return str(default)


def help_text(text: str, default=None, flag: Optional[str] = None) -> str:
    """``text`` with its default appended as ``[default: X]`` (rich markup, escaped); a default
    written in the text as "(default: X)" is moved there."""
    shown = _shown(default, flag)
    m = _PROSE_DEFAULT.search(text)
    if m:
        text, shown = (text[: m.start()] + text[m.end() :]).strip(), m.group(1)
        text = text if text.endswith((".", ")", "]")) else text + "."
    return f"{text} [dim]\\[default: {shown}][/dim]" if shown else text


def option_params(specs) -> List[inspect.Parameter]:
    """Keyword parameters with ``typer.Option``s for ``field_specs(...)`` rows (a ``MISSING``
    default makes the option required)."""
    params = []
    for name, tp, default, text, flags, (lo, hi) in specs:
        otype = _option_type(tp)
        flag = flags[0]
        if otype is Optional[bool] and default is not False:  # on, or decided later (None)
            flags = [f"{flags[0]}/--no-{flags[0][2:]}", *flags[1:]]
        elif otype is Optional[bool]:  # off unless given: a plain flag, no default shown
            default = None
        kind = {Optional[bool]: bool, Optional[int]: int, Optional[float]: float}.get(otype, str)
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=otype,
                default=typer.Option(
                    ... if default is MISSING else None, *flags,
                    help=help_text(text, default, flag), show_default=False,
                    metavar=_metavar(otype, kind), min=lo, max=hi,
                ),
            )
        )  # fmt: skip
    return params


def argument_params(cls, skip=()) -> List[inspect.Parameter]:
    """Positional parameters for the ``setting(..., argument=True)`` fields of ``cls``."""
    params = []
    for f in fields(cls):
        if not f.metadata.get("argument") or f.name in skip:
            continue
        required = f.default is MISSING and f.default_factory is MISSING
        many = "List" in str(f.type)
        params.append(
            inspect.Parameter(
                f.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=List[str] if many else Optional[str],
                default=typer.Argument(
                    ... if required else None, metavar=f.name.upper(),
                    help=help_text(f.metadata["help"], None if required else f.default),
                    show_default=False,
                ),
            )
        )  # fmt: skip
    return params


def _nested(cls):
    """(field name, settings dataclass) for fields that nest another settings dataclass."""
    out = []
    for f in fields(cls):
        sub = f.default_factory if f.default_factory is not MISSING else None
        if sub is not None and is_dataclass(sub) and "help" not in f.metadata:
            out.append((f.name, sub))
    return out


def _own_specs(cls, skip=()):
    from cherry_mlx.training.config import field_specs

    return [
        s for s in field_specs(cls)
        if s[0] not in skip and not cls.__dataclass_fields__[s[0]].metadata.get("argument")
    ]  # fmt: skip


def settings_params(cls, skip=()) -> List[inspect.Parameter]:
    """Arguments, then options, for every documented field of the settings dataclass ``cls``
    (and of the settings dataclasses it nests, such as a ``SamplingConfig``)."""
    params = argument_params(cls, skip) + option_params(_own_specs(cls, skip))
    for _, sub in _nested(cls):
        params += option_params(_own_specs(sub, skip))
    return params


def build(cls, values: dict):
    """``cls`` from flat command-line values: its own fields, the rest to the settings
    dataclasses it nests (a ``PhaseConfig`` sorts its own with ``from_flat``)."""
    if hasattr(cls, "from_flat"):
        return cls.from_flat(**values)
    own = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
    for name, sub in _nested(cls):
        own[name] = sub(**{k: v for k, v in values.items() if k in sub.__dataclass_fields__})
    return cls(**own)


def with_params(fn: Callable, params: List[inspect.Parameter]) -> Callable:
    """Give ``fn(**kwargs)`` the signature typer reads its options from."""
    fn.__signature__ = inspect.Signature(params)
    fn.__annotations__ = {p.name: p.annotation for p in params}
    return fn


def given(kwargs: dict) -> dict:
    """The options the user gave (typer passes None for the others)."""
    return {k: v for k, v in kwargs.items() if v is not None}


def command(app: typer.Typer, name: str, cls, target: str, skip=()) -> None:
    """Register ``name``: options generated from the settings dataclass ``cls`` (its docstring is
    the help); the command builds ``cls`` from the given values and calls ``target``
    ("module:function", imported only when the command runs) with it."""

    def body(**kwargs):
        module, function = target.split(":")
        getattr(importlib.import_module(module), function)(build(cls, given(kwargs)))

    body.__doc__ = cls.__doc__
    phase = hasattr(cls, "TRAIN_OPTIONS")
    params = phase_params(cls, skip) if phase else settings_params(cls, skip)
    app.command(name=name)(with_params(body, params))


def group(app: typer.Typer, name: str, help: str) -> typer.Typer:
    """A command group ``name`` under ``app`` (``cherry-mlx data build``...), in the house style."""
    from cherry_mlx_cli.style import StyledGroup

    sub = typer.Typer(cls=StyledGroup, help=help, no_args_is_help=True)
    app.add_typer(sub, name=name)
    return sub


def phase_params(cls, skip=()) -> List[inspect.Parameter]:
    """Arguments and options of a ``PhaseConfig``: its own fields, then the training settings it
    exposes with the phase's defaults shown."""
    from cherry_mlx.training.config import TrainConfig, field_specs

    own = _own_specs(cls, ("train", *skip))
    train = field_specs(TrainConfig, cls.TRAIN_OPTIONS, defaults=cls.default_train())
    return argument_params(cls, skip) + option_params(own) + option_params(train)
