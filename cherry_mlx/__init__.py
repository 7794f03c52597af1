"""cherry-mlx: the CHERRY techniques on MLX.

Importing the package arranges for MLX to use a fast BLAS on Linux, loaded when mlx is first
imported (see ``_blas``), so every entry point (CLI, tests, benchmarks) imports ``cherry_mlx``
before ``mlx``. Nothing is loaded or compiled until then, or at all after ``skip_fast_blas()``
(commands that multiply no matrices).
"""

from cherry_mlx._blas import install
from cherry_mlx._blas import skip as skip_fast_blas

install()

__all__ = ["skip_fast_blas"]

__version__ = "0.1.0"
