"""Reading user files and text: every I/O, encoding or format problem becomes one line naming the
file (and line) and the fix.

Outside the layers on purpose: models, data and the settings code all read user files, and each
should say the same thing about a file that is missing, unreadable, not UTF-8, not JSON or nested
too deeply. Errors are ``InputError`` (a ``ValueError``) or ``FileNotFoundError``, which the CLI
prints as ``cherry-mlx: error: ...``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Tuple

REPLACEMENT = "\ufffd"


class InputError(ValueError):
    """A user file or value that cannot be used: the message is one line with the fix."""


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def read_bytes(path: str | Path, what: str = "file") -> bytes:
    """The bytes of ``path``; missing, directory or unreadable files are one-line errors."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such {what}; check the path") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, not a {what}; pass the file inside it") from None
    except PermissionError:
        raise InputError(
            f"{path}: permission denied reading the {what}; make it readable (chmod u+r)"
        ) from None
    except OSError as err:
        raise InputError(f"{path}: cannot read the {what} ({_first_line(err)})") from None


def decode_utf8(data: bytes, where: str) -> str:
    """UTF-8 text of ``data``; invalid bytes are an error naming ``where:LINE`` and the column."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        bad = data[err.start : err.end].hex(" ")
        raise InputError(
            f"{where}:{line}: not valid UTF-8 (byte {bad} at column {col}); "
            "re-save the file as UTF-8"
        ) from None


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of a user file (a leading BOM is dropped)."""
    text = decode_utf8(read_bytes(path, what), str(path))
    return text[1:] if text.startswith("\ufeff") else text


def iter_lines(path: str | Path, what: str = "file") -> Iterator[Tuple[int, str]]:
    """``(line number, text)`` of each line, decoded one by one so an error names its line."""
    path = Path(path)
    try:
        fh = open(path, "rb")
    except OSError:
        read_bytes(path, what)  # raises the one-line error for this path
        raise
    with fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(
                    f"{path}:{lineno}: not valid UTF-8 (byte {raw[err.start : err.end].hex(' ')} "
                    f"at column {err.start + 1}); re-save the file as UTF-8"
                ) from None
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]
            yield lineno, line


def find_surrogate(obj: Any, field: str = "") -> Tuple[str, str] | None:
    """``(field, char)`` of the first lone surrogate in the strings of a decoded JSON value.

    JSON escapes such as ``"\\ud800"`` decode to lone surrogates, which no tokenizer or file
    writer can encode; they are reported where they are, not when they crash much later."""
    stack = [(field, obj)]
    while stack:
        f, v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as err:
                return f or "(value)", v[err.start]
        elif isinstance(v, dict):
            stack.extend((f"{f}.{k}" if f else str(k), x) for k, x in reversed(v.items()))
            stack.extend((f"{f}.(key)", k) for k in v if isinstance(k, str))
        elif isinstance(v, list):
            stack.extend((f"{f}[{i}]", x) for i, x in reversed(list(enumerate(v))))
    return None


def loads_json(text: str, where: str) -> Any:
    """``json.loads`` with one-line errors naming ``where`` (syntax, depth, lone surrogates)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(
            f"{where}: invalid JSON ({err.msg} at line {err.lineno} column {err.colno}); "
            "fix its syntax"
        ) from None
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply to read; flatten it") from None
    bad = find_surrogate(value)
    if bad is not None:
        raise InputError(
            f"{where}: field {bad[0]}: lone surrogate {ascii(bad[1])} is not a character; "
            "write the full character (or its surrogate pair)"
        )
    return value


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """The decoded JSON of a user file."""
    return loads_json(read_text(path, what), str(path))


def repair_text(text: str) -> Tuple[str, bool]:
    """``text`` with invalid pieces replaced by U+FFFD, and whether anything was replaced.

    Undecodable bytes read with ``surrogateescape`` (U+DC80..U+DCFF) are decoded again as UTF-8
    with replacement; any other lone surrogate becomes U+FFFD. Typed text is repaired with a
    notice, never a lost session."""
    try:
        text.encode("utf-8")
        return text, False
    except UnicodeEncodeError:
        pass
    kept = "".join(
        REPLACEMENT if 0xD800 <= ord(c) < 0xDC80 or 0xDD00 <= ord(c) <= 0xDFFF else c for c in text
    )
    return kept.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), True


def read_stdin_text(notice=None) -> str:
    """All of stdin as text; invalid UTF-8 is replaced by U+FFFD with a notice on stderr. A closed
    stdin (``<&-``) is an InputError, not a read of whatever file later took descriptor 0."""
    if sys.stdin is None or (hasattr(sys.stdin, "fileno") and not _stdin_open()):
        raise InputError("stdin is closed: pipe the text in (... | cherry-mlx ...) or pass it")
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
    if isinstance(data, str):
        text, bad = repair_text(data)
    else:
        text, bad = repair_text(data.decode("utf-8", "surrogateescape"))
    if bad:
        print(
            "note: stdin was not valid UTF-8; the invalid bytes were replaced with U+FFFD",
            file=notice or sys.stderr,
        )
    return text


def _stdin_open() -> bool:
    try:
        fd = sys.stdin.fileno()
    except (OSError, ValueError):  # an in-memory stdin (tests, embedding): readable
        return not STDIN_WAS_CLOSED
    try:
        os.fstat(fd)
    except OSError:
        return False
    return not STDIN_WAS_CLOSED


# Set by ``hold_std_fds`` when the process started with descriptor 0 closed.
STDIN_WAS_CLOSED = False


def hold_std_fds() -> None:
    """Point closed descriptors 0-2 at /dev/null. Started with ``<&-``, the next file opened
    (a model's weights) would get descriptor 0 and be read as stdin or closed with it."""
    global STDIN_WAS_CLOSED
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            got = os.open(os.devnull, os.O_RDWR)
            if got != fd:
                os.dup2(got, fd)
                os.close(got)
            STDIN_WAS_CLOSED = STDIN_WAS_CLOSED or fd == 0
