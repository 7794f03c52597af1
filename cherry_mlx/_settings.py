"""``setting()``: a dataclass field that carries its own help text, so each command's options are
written once, in the library, and the CLI (``cli/options.py``) generates them from the fields.

Outside the layers (like ``_io``) so settings dataclasses at every level can use it; no MLX here,
so reading the fields for ``--help`` stays instant.
"""

from __future__ import annotations

from dataclasses import MISSING, field
from typing import Optional


def setting(
    default, help: str, flag: Optional[str] = None, short: Optional[str] = None,
    at_least=None, at_most=None, argument: bool = False, **kw,
):  # fmt: skip
    """A dataclass field with its help text (and command-line flag when it differs); numbers
    outside ``[at_least, at_most]`` are rejected by ``training.values.check_fields``.

    ``argument=True`` makes it a positional command-line argument (required when ``default`` is
    ``dataclasses.MISSING``). A help text may end with "(default: X)" for a default that is not a
    value ("the latest run"); the help shows it as ``[default: X]`` like every other default.
    """
    meta = {"help": help}
    if at_least is not None:
        meta["at_least"] = at_least
    if at_most is not None:
        meta["at_most"] = at_most
    if flag:
        meta["flag"] = flag
    if short:
        meta["short"] = short
    if argument:
        meta["argument"] = True
    if default is MISSING:
        return field(metadata=meta, **kw)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)
