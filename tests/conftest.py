# ruff: noqa: I001  (cherry_mlx must be imported before mlx)
"""Shared test fixtures. Importing cherry_mlx first loads the fast BLAS before mlx."""

import os

os.environ.setdefault("CHERRY_MLX_QUIET", "1")

import cherry_mlx  # noqa: E402,F401  (must precede mlx)
import mlx.core as mx  # noqa: E402
import pytest  # noqa: E402

TINY = dict(
    model_type="llama",
    hidden_size=64,
    num_hidden_layers=2,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    vocab_size=256,
    max_position_embeddings=128,
    tie_word_embeddings=False,
)


@pytest.fixture
def tiny_config():
    """A fresh copy of a tiny Llama config (hidden 64, 2 layers, vocab 256)."""
    return dict(TINY)


@pytest.fixture(autouse=True)
def _seed():
    mx.random.seed(0)
    yield
