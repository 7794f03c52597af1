"""One help style for every command: commands listed in workflow order, each command's one-line
summary unbroken, no type tag on flags (``--help`` included), values shown as ``INT``/``FLOAT``/
``TEXT`` and positional arguments in capitals. Applied to every command the group hands out, so
options written by hand read like the generated ones."""

from __future__ import annotations

import inspect

import typer.core
from cherry_mlx_cli.options import help_text
from typer.core import TyperArgument, TyperOption

# The order a new user meets the commands in: get a model and data, train and measure, shrink,
# then run it. A command missing here is listed after these, alphabetically.
WORKFLOW = (
    "import", "info", "plan", "data", "tokenizer", "tag",
    "train", "eval", "ssgt-eval", "ssgt-retention",
    "teacher", "train-mtp", "compress", "upscale", "fuse", "distill", "cabstractor", "quantize",
    "repro", "generate", "chat",
)  # fmt: skip
_METAVARS = {"<int>": "INT", "<float>": "FLOAT", "<str>": "TEXT", "<path>": "PATH"}


def paragraphs(help_text: str):
    """A docstring's paragraphs, each on one line (rich help keeps single line breaks)."""
    return [" ".join(p.split()) for p in inspect.cleandoc(help_text or "").split("\n\n")]


class _Argument(TyperArgument):
    """A positional argument whose capitalised name says what it is (no type tag)."""

    def display_type_rich(self, ctx):
        return None


def tidy(cmd, ctx):
    """Give ``cmd`` the house help style (idempotent)."""
    if cmd.help:
        cmd.help = "\n\n".join(paragraphs(cmd.help))
    params = list(cmd.params)
    help_option = cmd.get_help_option(ctx)
    if help_option is not None:
        params.append(help_option)
    for p in params:
        if p.help and "(default" in p.help:  # options written by hand: defaults shown one way
            p.help = help_text(p.help)
        if isinstance(p, TyperArgument):
            p.metavar = p.metavar or p.name.upper()
            p.__class__ = _Argument
        elif p.metavar is not None:
            continue
        elif isinstance(p, TyperOption) and (p.is_flag or p.count):
            p.metavar = ""
        elif isinstance(p, TyperOption):
            shown = p.display_type(ctx)
            p.metavar = _METAVARS.get(shown, shown.strip("<>").upper())
    return cmd


class StyledGroup(typer.core.TyperGroup):
    """A command group that lists commands in ``WORKFLOW`` order and tidies their help."""

    def list_commands(self, ctx):
        names = super().list_commands(ctx)
        rank = {n: i for i, n in enumerate(WORKFLOW)}
        return sorted(names, key=lambda n: (rank.get(n, len(WORKFLOW)), n))

    def get_command(self, ctx, cmd_name: str):
        cmd = super().get_command(ctx, cmd_name)
        return tidy(cmd, ctx) if cmd is not None else None

    def format_help(self, ctx, formatter):
        tidy(self, ctx)
        return super().format_help(ctx, formatter)
