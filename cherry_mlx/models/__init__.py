"""Models: the Llama-family backbone with its looped schedule, MTP heads, the MoEE container and
gate, loading/saving, and the run layout. Imports nothing else of cherry-mlx.

Names are exported lazily (PEP 562) so that light modules such as ``models.runs`` (used by the
CLI's option lists) do not pull in MLX and mlx-lm.
"""

import importlib

_EXPORTS = {
    "Model": "llama",
    "ModelArgs": "llama",
    "build_model": "loading",
    "list_presets": "loading",
    "load_model": "loading",
    "load_tokenizer": "loading",
    "resolve": "loading",
    "save_model": "loading",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
