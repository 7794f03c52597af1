"""Model definitions (Llama backbone with optional recurrent core) and loading."""

from .llama import Model, ModelArgs
from .loading import build_model, list_presets, load_model, load_tokenizer, resolve, save_model

__all__ = [
    "Model",
    "ModelArgs",
    "build_model",
    "list_presets",
    "load_model",
    "load_tokenizer",
    "resolve",
    "save_model",
]
