"""Training: the SGT trainer (``train``), its settings (``TrainConfig``), the one MTP loss,
checkpoints, resume, and ``prepare`` (tokenizer and data for every phase).

Names are exported lazily (PEP 562) so that reading the settings (``training.config``, used by the
CLI's option lists) does not pull in MLX.
"""

import importlib

_EXPORTS = {
    "TrainConfig": "config",
    "resolve_config": "config",
    "train": "trainer",
    "TrainCallback": "trainer",
    "TrainResult": "trainer",
    "TrainingDiverged": "trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
