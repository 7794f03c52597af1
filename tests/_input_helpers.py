"""Helpers shared by the bad-input tests (one clear line per bad input, before any work)."""

from pathlib import Path

from typer.testing import CliRunner


def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg.strip(), msg
    return msg


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def cli(*args):
    from cherry_mlx_cli.main import app

    return CliRunner().invoke(app, list(args))


def messages(assistant="Paris.", **extra):
    return {"messages": [{"role": "user", "content": "Capital?"},
                         {"role": "assistant", "content": assistant, **extra}]}  # fmt: skip


def jsonl(tmp_path, *rows, name="train.jsonl") -> Path:
    import json

    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path
