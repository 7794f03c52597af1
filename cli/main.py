"""``cherry-mlx`` entry point.

Every ``cmd_*.py`` module beside this file adds its commands through ``register(app)``; command
bodies import the library lazily so ``cherry-mlx --help`` stays instant. Library errors meant for
users (``ValueError``, ``FileNotFoundError``) are printed as one line, not a traceback.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys

import typer
from cherry_mlx_cli.style import StyledGroup

app = typer.Typer(
    name="cherry-mlx",
    help="CHERRY on MLX: SGT training, depth compression, MoEE fusion, NVFP4 serving.",
    cls=StyledGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"cherry-mlx {version('cherry-mlx')}")
        except PackageNotFoundError:  # a source checkout that was never installed
            typer.echo("cherry-mlx (not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_version, help="Print the version and exit."
    ),
) -> None:
    """CHERRY on MLX: SGT training, depth compression, MoEE fusion, NVFP4 serving."""


def _register_all() -> None:
    package_dir = os.path.dirname(__file__)
    for info in sorted(pkgutil.iter_modules([package_dir]), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            module = importlib.import_module(f"{__package__}.{info.name}")
            module.register(app)


_register_all()

# Commands that multiply no matrices: no BLAS is loaded and nothing compiled for them (``--help``
# and ``--version`` import no mlx at all).
NO_MATMUL = ("info", "plan", "import", "tokenizer")


def main() -> None:
    from cherry_mlx._io import hold_std_fds

    hold_std_fds()  # a closed stdin must not hand descriptor 0 to the weights file
    if sys.argv[1:2] and sys.argv[1] in NO_MATMUL:
        import cherry_mlx

        cherry_mlx.skip_fast_blas()
    try:
        app()
    except (ValueError, FileNotFoundError) as err:
        if os.environ.get("CHERRY_MLX_DEBUG"):
            raise
        print(f"cherry-mlx: error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:  # disk full, read-only output, ...: one line naming the file
        if os.environ.get("CHERRY_MLX_DEBUG"):
            raise
        where = f": {err.filename}" if err.filename else ""
        print(f"cherry-mlx: error: {err.strerror or err}{where}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
