"""The ``cherry_model.py`` written next to looped, MTP and MoEE weights: self-contained.

``mlx_lm.load(path, trust_remote_code=True)`` executes the file named by ``model_file`` in
``config.json``. It must build the model on a machine without cherry-mlx, so instead of importing
our package it carries the model code itself: the sources of the model modules below, in
dependency order, with the imports between them removed (the names are then simply defined earlier
in the same file). It needs mlx, mlx-lm and numpy only, and it is regenerated from the package's
own source on every save, so it cannot drift from what ``load_model`` builds.
"""

from __future__ import annotations

import ast
import inspect
from importlib import import_module
from typing import Any, Dict

# cherry_mlx.models modules the model classes are built from, each after those it imports
SOURCES = ("families", "mtp_base", "mtp_cross", "mtp", "llama", "gate", "moee")
PACKAGE = "cherry_mlx"


def _body(module: str) -> str:
    """A module's source without its docstring, ``__future__`` import and imports of ours."""
    source = inspect.getsource(import_module(f"{__package__}.{module}"))
    lines = source.splitlines()
    drop, aliases = set(), []
    body = ast.parse(source).body
    for node in body:
        ours = isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE)
        future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
        doc = node is body[0] and isinstance(node, ast.Expr)  # the module docstring
        if ours or future or doc:
            drop.update(range(node.lineno - 1, node.end_lineno))
            if ours:
                aliases += [f"{a.asname} = {a.name}" for a in node.names if a.asname]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if any(n.startswith(PACKAGE) for n in names):
                raise AssertionError(f"{module} imports {PACKAGE} in a form we cannot inline")
    kept = "\n".join(line for i, line in enumerate(lines) if i not in drop).strip()
    return "\n".join(aliases + [kept]) + "\n"


def model_file_text(config: Dict[str, Any]) -> str:
    """The model file for ``config``: ``Model``/``ModelArgs`` are the classes ``load_model``
    would pick (the MoEE ones for a config with ``moee``)."""
    parts = [
        '"""Model code for mlx_lm.load(path, trust_remote_code=True), written by cherry-mlx.\n\n'
        "Self-contained (mlx, mlx-lm and numpy only): the code of the cherry_mlx.models modules "
        f"{{{', '.join(SOURCES)}}}.\n"
        '"""\n\nfrom __future__ import annotations\n\nimport sys\n\n'
        "# mlx-lm runs this file without registering it in sys.modules, where dataclasses look\n"
        "sys.modules.setdefault(__name__, type(sys)(__name__))\n"
    ]
    for module in SOURCES:
        parts.append(f"# ---- cherry_mlx.models.{module} ----\n{_body(module)}")
    if config.get("moee"):
        granular = config["moee"].get("granularity", "model") == "layer"
        cls = "LayerMoEEModel" if granular else "MoEEModel"
        parts.append(f"Model = {cls}\nModelArgs = MoEEArgs\n")
    return "\n\n".join(parts)
