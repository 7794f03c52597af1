"""Typed setting values: one parser for the command line and settings files, and the checks every
settings dataclass shares (finite floats, non-negative counts, declared bounds).

A YAML 1.1 file reads ``learning_rate: 1e-4`` as the string ``"1e-4"`` and a JSON file may quote
any number; both are turned into the field's type exactly as the command line would, or rejected
in one line naming the file and the key. No MLX here: the CLI reads these modules for ``--help``.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

_TRUE = ("1", "true", "yes", "on", "y", "t")
_FALSE = ("0", "false", "no", "off", "n", "f")


def kind(tp: Any) -> str:
    """``bool``, ``int``, ``float``, ``list`` or ``str`` for a (string) dataclass field type."""
    s = str(tp)
    if "List" in s or "list" in s:
        return "list"
    for name in ("bool", "int", "float"):
        if name in s:
            return name
    return "str"


def optional(tp: Any) -> bool:
    return "Optional" in str(tp) or "None" in str(tp)


def coerce(value: Any, tp: Any, key: str, source: str = "") -> Any:
    """``value`` as the field type ``tp`` (as the command line parses it), else a one-line
    ``ValueError`` naming ``source`` (a settings file) and ``key``."""
    where = f"{source}: {key}" if source else key
    if value is None:
        if optional(tp):
            return None
        raise ValueError(f"{where}: a value is required (null given); give a value")
    k = kind(tp)
    bad = f"{where}: {value!r} is not "
    if k == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(bad + "a boolean; write true or false")
    if k == "int":
        if isinstance(value, bool) or isinstance(value, (list, dict)):
            raise ValueError(bad + "an integer; write a whole number such as 8")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            raise ValueError(bad + "an integer; write a whole number such as 8") from None
    if k == "float":
        if isinstance(value, bool) or isinstance(value, (list, dict)):
            raise ValueError(bad + "a number; write e.g. 0.001 or 1e-4")
        try:
            out = float(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise ValueError(bad + "a number; write e.g. 0.001 or 1e-4") from None
        if not math.isfinite(out):
            raise ValueError(f"{where}: {value!r} is not a finite number; give a real one")
        return out
    if k == "list" and "float" in str(tp):  # numbers, e.g. eval's repeatable --eta
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ValueError(bad + "a list of numbers; write 0.1, 0.2 or [0.1, 0.2]")
        return [coerce(v, "float", key, source) for v in items]
    if k == "list":
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)) and all(
            isinstance(v, (str, int, float)) for v in value
        ):
            if any(isinstance(v, bool) for v in value):
                raise ValueError(bad + "a list of names; write a, b or [a, b]")
            return [str(v) for v in value]
        raise ValueError(bad + "a list of names; write a, b or [a, b]")
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # YAML reads a name such as 2024 as a number; the CLI would not
    raise ValueError(bad + "text; quote it")


def flag_of(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def check_fields(obj: Any) -> None:
    """Coerce every documented field of a settings dataclass in place and check its bounds
    (``setting(..., at_least=N, at_most=M)``); NaN and infinity are never a setting."""
    for f in fields(obj):
        if "help" not in f.metadata:
            continue
        value = coerce(getattr(obj, f.name), f.type, flag_of(f))
        if value is not getattr(obj, f.name):
            object.__setattr__(obj, f.name, value)
        lo, hi = f.metadata.get("at_least"), f.metadata.get("at_most")
        if value is None or kind(f.type) not in ("int", "float"):
            continue
        if lo is not None and value < lo:
            raise ValueError(f"{flag_of(f)} {value}: must be >= {lo}")
        if hi is not None and value > hi:
            raise ValueError(f"{flag_of(f)} {value}: must be <= {hi}")
