"""The command line as a new user meets it: one help style across every command, commands in
workflow order, ``--version``, and ``--help`` that imports no MLX."""

import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import typer.main
from cherry_mlx_cli.main import app
from cherry_mlx_cli.style import WORKFLOW
from typer.testing import CliRunner

from cherry_mlx.models.presets import DEFAULT_PRESET, WEIGHTS_DIR

ROOT = Path(__file__).resolve().parents[1]


def _commands():
    """(path, click command, its context) for every command and group, depth first."""
    root = typer.main.get_command(app)
    out = []

    def walk(cmd, path, parent):
        ctx = cmd.make_context(path[-1] if path else "cherry-mlx", [], parent=parent,
                               resilient_parsing=True)  # fmt: skip
        out.append((path, cmd, ctx))
        for name in getattr(cmd, "list_commands", lambda c: [])(ctx):
            walk(cmd.get_command(ctx, name), [*path, name], ctx)

    walk(root, [], None)
    return out


COMMANDS = _commands()
IDS = [" ".join(p) or "cherry-mlx" for p, _, _ in COMMANDS]


def _help(path):
    env = {"COLUMNS": "100", "TERMINAL_WIDTH": "100"}
    res = CliRunner().invoke(app, [*path, "--help"], env=env)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize("path", [p for p, _, _ in COMMANDS], ids=IDS)
def test_help_has_one_style(path):
    text = _help(path)
    # no <bool>/<str>/<int> type tags, not even on --help
    assert not re.search(r"<(bool|str|int|float|path|list\[\w+\])>", text), text
    # defaults only as [default: X]: never "(default X)" prose, never "[default: (X)]"
    assert "(default" not in text and "[default: (" not in text, text
    assert "--help" in text


@pytest.mark.parametrize("path,cmd,ctx", COMMANDS, ids=IDS)
def test_every_option_and_argument_is_documented(path, cmd, ctx):
    params = [*cmd.params, cmd.get_help_option(ctx)]
    for p in params:
        if p is None:
            continue
        assert (p.help or "").strip(), f"{' '.join(path)}: {p.name} has no help text"
    # the summary in a command list is one line: no line break inside a paragraph
    for paragraph in (cmd.help or "").split("\n\n"):
        assert "\n" not in paragraph, f"{' '.join(path)}: help broken mid-paragraph"


def test_commands_listed_in_workflow_order():
    text = _help([])
    listed = [n for n in re.findall(r"^│ ([a-z][a-z-]+) ", text, flags=re.M)]
    assert listed == [n for n in WORKFLOW if n in listed]
    assert set(listed) == set(WORKFLOW)  # a new command gets its place in WORKFLOW
    assert listed[:3] == ["import", "info", "plan"] and listed[-1] == "chat"


def test_version_is_the_installed_one():
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.output.strip() == f"cherry-mlx {version('cherry-mlx')}"


def test_compress_example_fits_the_default_preset():
    config = json.loads((WEIGHTS_DIR / DEFAULT_PRESET / "config.json").read_text())
    n = config["num_hidden_layers"]
    text = " ".join(_help(["compress"]).split())
    assert "--to 6L --loops 8" in text and f"{n} layers -> 6 unique" in text


def test_help_imports_no_mlx():
    """Every ``--help`` renders from the settings dataclasses alone: MLX is never imported."""
    script = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from cherry_mlx_cli.main import app\n"
        f"for path in {[p for p, _, _ in COMMANDS]!r}:\n"
        "    assert CliRunner().invoke(app, [*path, '--help']).exit_code == 0, path\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm')))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), CHERRY_MLX_QUIET="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
