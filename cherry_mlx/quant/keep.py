"""Checking ``quantize --keep`` before any layer is touched (pure Python, for the settings too).

An item is a layer name (an alias or a path fragment) kept in full precision, ``NAME:MODE``
(those layers in another mode) or ``auto[:BITS]``. The name is matched as a substring of layer
paths, so an empty name (``:affine8``) would match every layer and silently change the whole
model's format; and one name given two treatments (``embed,embed:affine8``) has no single meaning.
Both are refused here, as is a budget that is not a finite number.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence


def keep_items(keep: Optional[str | Sequence[str]]) -> List[str]:
    """The non-empty, stripped items of a comma-separated ``--keep``."""
    if not keep:
        return []
    items = keep.split(",") if isinstance(keep, str) else list(keep)
    return [k.strip() for k in items if k.strip()]


def check_keep(keep: Optional[str | Sequence[str]], modes: Sequence[str]) -> List[str]:
    """The items of ``keep``, or a one-line ``ValueError`` naming the bad item and the fix."""
    items = keep_items(keep)
    seen: Dict[str, str] = {}  # name -> the item that gave it a treatment
    autos = []
    for item in items:
        name, sep, mode = (part.strip() for part in item.partition(":"))
        if name == "auto":
            if sep and not _finite_budget(mode):
                raise ValueError(f"--keep {item!r}: write auto or auto:BITS, e.g. auto:5.0")
            autos.append(item)
            continue
        if not name:
            raise ValueError(
                f"--keep {item!r} names no layer (it would match every layer); write NAME:MODE, "
                "e.g. embed:affine8, or --mode to change the whole model"
            )
        if sep and mode not in modes:
            raise ValueError(f"--keep {item!r}: {mode!r} is no mode; use one of {', '.join(modes)}")
        if name in seen and seen[name] != item:
            raise ValueError(
                f"--keep gives {name!r} two treatments ({seen[name]}, {item}); keep one"
            )
        seen[name] = item
    if len(autos) > 1:
        raise ValueError(f"--keep has {len(autos)} auto budgets ({', '.join(autos)}); give one")
    return items


def _finite_budget(text: str) -> bool:
    try:
        return math.isfinite(float(text)) and float(text) > 0
    except ValueError:
        return False
