"""Read and validate JSONL data sets in the shapes mlx-lm accepts, plus GT span annotations.

One JSON object per line, in one of three shapes (as ``mlx_lm.tuner.datasets``):
    {"messages": [{"role": ..., "content": ...}, ...], "tools": [...]}   (tools optional)
    {"prompt": "...", "completion": "..."}
    {"text": "..."}
GT annotations are character spans on the supervised text, so they survive any
tokenizer: ``"gt": [{"start": 10, "end": 15, "level": 1, "category": "factual"}]`` on an assistant
message (offsets into its ``content``), on one of its tool calls (offsets into that call's
canonical text, see ``tool_call_text``), or at the top level of a prompt/completion example (into
``completion``) or a text example (into ``text``).

Tool calls are written as mlx-lm / OpenAI do, so the chat template wraps them in its own tool-call
markers (ours: ``<|spartan_tool|>...<|spartan_tool_end|>``)::

    {"role": "assistant", "content": "", "tool_calls": [{"type": "function",
      "function": {"name": "get_weather", "arguments": {"city": "Seoul"}},
      "gt": [{"start": 10, "end": 21, "level": 2, "category": "verification"}]}]}

A call's ``gt`` sits beside ``function`` (templates render ``function`` only, so the spans never
reach the rendered text). Its offsets index the canonical serialisation of the call,
``{"name": NAME, "arguments": ARGS}`` as ``json.dumps(..., ensure_ascii=False)`` writes it (string
``arguments`` are inserted verbatim): exactly what our template renders between the markers, and
what ``transformers``' ``tojson`` filter gives in other templates that render the call as one JSON
object. Above, ``[10, 21)`` is ``get_weather``. Keeping the spans off the template's own markers
keeps them tokenizer- and template-independent; the encoder finds the call text in the rendered
conversation the way it finds ``content`` (``cherry_mlx.data.encode``).

Every problem is reported as ``FILE:LINE: field F: problem; fix`` through ``DataError``, a
``ValueError`` so the CLI prints it as one line. Blank lines are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

from cherry_mlx._io import InputError, find_surrogate, iter_lines
from cherry_mlx.data.categories import CATEGORIES

ROLES = ("system", "user", "assistant", "tool")


class DataError(ValueError):
    """A malformed data line: the message names file, line and field, and says how to fix it."""


def _fail(where: str, field: str, problem: str, fix: str):
    raise DataError(f"{where}: field {field}: {problem}; {fix}")


def validate_spans(spans: Any, text: str, where: str, field: str) -> None:
    """Check a ``gt`` list against the text it annotates (offsets are Python str indices)."""
    if not isinstance(spans, list):
        _fail(
            where,
            field,
            f"expected a list of spans, got {type(spans).__name__}",
            'write "gt": [{"start": S, "end": E, "level": 1, "category": "factual"}]',
        )
    for i, span in enumerate(spans):
        f = f"{field}[{i}]"
        if not isinstance(span, dict):
            _fail(
                where,
                f,
                f"expected an object, got {type(span).__name__}",
                'write {"start": S, "end": E, "level": L, "category": C}',
            )
        for key in ("start", "end", "level", "category"):
            if key not in span:
                _fail(where, f"{f}.{key}", "missing", f"add {key!r} to every span")
        start, end, level, cat = span["start"], span["end"], span["level"], span["category"]
        for key, val in (("start", start), ("end", end), ("level", level)):
            if not isinstance(val, int) or isinstance(val, bool):
                _fail(where, f"{f}.{key}", f"{val!r} is not an integer", "use an integer")
        if not 0 <= start < end <= len(text):
            _fail(
                where,
                f"{f}.start/end",
                f"span [{start}, {end}) is outside the annotated "
                f"text of {len(text)} characters or empty",
                "use character offsets with 0 <= start < end <= len(text)",
            )
        if level not in (1, 2, 3):
            _fail(
                where,
                f"{f}.level",
                f"{level} is not a GT level",
                "use 1 (GT), 2 (super-GT) or 3 (SSGT)",
            )
        if cat not in CATEGORIES:
            _fail(
                where, f"{f}.category", f"{cat!r} is unknown", f"use one of {', '.join(CATEGORIES)}"
            )


def tool_call_text(tc: dict) -> str:
    """The canonical text of one tool call, the text its ``gt`` offsets index.

    Mirrors ``tool_json`` in our chat template: ``tc["function"]`` if present (else ``tc``
    itself), rendered as ``{"name": NAME, "arguments": ARGS}`` with ``transformers``' ``tojson``
    (``json.dumps`` with ``ensure_ascii=False``, default separators, keys in their given order);
    string ``arguments`` (already JSON, OpenAI style) are inserted as they are."""
    f = tc.get("function", tc)
    name, args = f.get("name"), f.get("arguments")
    if isinstance(args, str):
        return '{"name": ' + json.dumps(name, ensure_ascii=False) + ', "arguments": ' + args + "}"
    return json.dumps({"name": name, "arguments": args}, ensure_ascii=False)


def assistant_pieces(m: dict) -> list[tuple[str, list | None]]:
    """``(text, gt)`` of each annotatable piece of an assistant message, in rendering order: its
    ``content`` (when non-empty), then the canonical text of each tool call."""
    out = []
    if m.get("content"):
        out.append((m["content"], m.get("gt")))
    for tc in m.get("tool_calls") or []:
        out.append((tool_call_text(tc), tc.get("gt")))
    return out


def validate_tool_calls(calls: Any, role: str, where: str, field: str) -> None:
    """Check a ``tool_calls`` list: objects with a string ``name`` and object or string
    ``arguments`` (under ``function`` or at the top), and valid ``gt`` spans on the call text."""
    if not isinstance(calls, list):
        _fail(where, field, "expected a list", "list the calls")
    for j, tc in enumerate(calls):
        f = f"{field}[{j}]"
        if not isinstance(tc, dict):
            _fail(
                where,
                f,
                f"expected an object, got {type(tc).__name__}",
                'write {"type": "function", "function": {"name": ..., "arguments": {...}}}',
            )
        fn, ff = (tc["function"], f"{f}.function") if "function" in tc else (tc, f)
        if not isinstance(fn, dict):
            _fail(where, ff, f"expected an object, got {type(fn).__name__}", "give name/arguments")
        if not isinstance(fn.get("name"), str):
            _fail(where, f"{ff}.name", f"{fn.get('name')!r} is not a string", "name the tool")
        if not isinstance(fn.get("arguments"), (dict, str)):
            _fail(
                where,
                f"{ff}.arguments",
                f"expected an object or a JSON string, got {type(fn.get('arguments')).__name__}",
                'write "arguments": {} when the tool takes none',
            )
        if isinstance(fn["arguments"], str) and not _is_json_object(fn["arguments"]):
            _fail(
                where,
                f"{ff}.arguments",
                f"{_short(fn['arguments'])} is not a JSON object",
                'write the arguments as an object, e.g. "arguments": {"city": "Seoul"}',
            )
        if "gt" in tc:
            if role != "assistant":
                _fail(
                    where,
                    f"{f}.gt",
                    f"GT spans on a {role} turn",
                    "annotate assistant turns only (other turns are never supervised)",
                )
            validate_spans(tc["gt"], tool_call_text(tc), where, f"{f}.gt")


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def _short(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def _check_str(obj: dict, key: str, where: str, field: str, optional: bool = False) -> None:
    val = obj.get(key)
    if val is None and optional:
        return
    if not isinstance(val, str):
        _fail(where, field, f"expected a string, got {type(val).__name__}", "make it a string")


def validate_example(ex: Any, where: str) -> dict:
    """Validate one decoded example; returns it unchanged."""
    if not isinstance(ex, dict):
        _fail(
            where,
            "(line)",
            f"expected a JSON object, got {type(ex).__name__}",
            "write one object per line",
        )
    shapes = [k for k in ("messages", "prompt", "text") if k in ex]
    if len(shapes) != 1:
        _fail(
            where,
            "(keys)",
            f"found {sorted(ex)}",
            'give exactly one of "messages", "prompt"+"completion" or "text"',
        )
    if "messages" in ex:
        msgs = ex["messages"]
        if not isinstance(msgs, list) or not msgs:
            _fail(where, "messages", "expected a non-empty list", "list the conversation's turns")
        for i, m in enumerate(msgs):
            f = f"messages[{i}]"
            if not isinstance(m, dict):
                _fail(where, f, "expected an object", 'write {"role": ..., "content": ...}')
            if m.get("role") not in ROLES:
                _fail(where, f"{f}.role", f"{m.get('role')!r} is not a role", f"use one of {ROLES}")
            # an assistant turn that only calls tools may have no content
            optional = m["role"] == "assistant" and bool(m.get("tool_calls"))
            _check_str(m, "content", where, f"{f}.content", optional=optional)
            for key in ("reasoning_content", "thinking", "refusal"):
                _check_str(m, key, where, f"{f}.{key}", optional=True)
            if "gt" in m:
                if m["role"] != "assistant":
                    _fail(
                        where,
                        f"{f}.gt",
                        f"GT spans on a {m['role']} turn",
                        "annotate assistant turns only (other turns are never supervised)",
                    )
                validate_spans(m["gt"], m.get("content") or "", where, f"{f}.gt")
            if "tool_calls" in m:
                validate_tool_calls(m["tool_calls"], m["role"], where, f"{f}.tool_calls")
        if "gt" in ex:
            _fail(
                where,
                "gt",
                "top-level GT spans on a messages example",
                'put "gt" on the assistant message whose content it indexes',
            )
        if not any(m["role"] == "assistant" for m in msgs):
            _fail(where, "messages", "no assistant turn", "add the assistant's response")
        if "tools" in ex and not isinstance(ex["tools"], list):
            _fail(where, "tools", "expected a list", "list the tool schemas")
    elif "prompt" in ex:
        _check_str(ex, "prompt", where, "prompt")
        if "completion" not in ex:
            _fail(where, "completion", "missing", 'add "completion" next to "prompt"')
        _check_str(ex, "completion", where, "completion")
        if "gt" in ex:
            validate_spans(ex["gt"], ex["completion"], where, "gt")
    else:
        _check_str(ex, "text", where, "text")
        if "gt" in ex:
            validate_spans(ex["gt"], ex["text"], where, "gt")
    return ex


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    """Yield validated examples of a JSONL file, one per non-blank line."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such data file (build the default with "
            "`cherry-mlx data build` or pass an existing .jsonl)"
        )
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            ex = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{where}: field (line): invalid JSON ({err.msg} at column "
                f"{err.colno}); write one JSON object per line"
            ) from None
        except RecursionError:
            raise DataError(
                f"{where}: field (line): JSON nested too deeply; flatten the example"
            ) from None
        bad = find_surrogate(ex)
        if bad is not None:
            _fail(
                where,
                bad[0],
                f"lone surrogate {ascii(bad[1])} is not a character",
                "write the full character (or its surrogate pair)",
            )
        yield validate_example(ex, where)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Numbered lines; an encoding or I/O problem is a ``DataError`` naming file and line."""
    try:
        yield from iter_lines(path, "data file")
    except InputError as err:
        raise DataError(str(err)) from None


def read_jsonl(path: str | Path) -> list[dict]:
    """All validated examples of a JSONL file (see the module docstring for the shapes)."""
    return list(iter_jsonl(path))


def example_texts(ex: dict) -> Iterable[str]:
    """Every piece of natural text in an example (for tokenizer training and statistics)."""
    if "messages" in ex:
        for m in ex["messages"]:
            for key in ("content", "reasoning_content", "thinking", "refusal"):
                if isinstance(m.get(key), str):
                    yield m[key]
            for tc in m.get("tool_calls") or []:
                yield tool_call_text(tc)
        if ex.get("tools"):
            yield json.dumps(ex["tools"], ensure_ascii=False)
    elif "prompt" in ex:
        yield ex["prompt"]
        yield ex["completion"]
    else:
        yield ex["text"]
