"""Training: the SGT trainer (``train``), its settings (``TrainConfig``), checkpoints and eval.

Names are imported lazily so that reading the settings (``training.config``, used by the CLI's
option list) does not pull in MLX.
"""

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
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
