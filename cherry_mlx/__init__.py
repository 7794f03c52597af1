"""cherry-mlx: the CHERRY techniques on MLX.

Importing the package first makes MLX use a fast BLAS on Linux (see ``_blas``), so every entry
point (CLI, tests, benchmarks) imports ``cherry_mlx`` before ``mlx``.
"""

from cherry_mlx._blas import ensure_fast_blas

ensure_fast_blas()

__version__ = "0.1.0"
