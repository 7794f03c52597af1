"""Structural seeding (Table 2 "structural"): JSON/tool-call schema keys and literal values, closing
delimiters, first tokens of structured-output fields, and the turn-initial token.

Keys and closing brackets are structural. Literal values are structural inside a tool call (Table
2: schema literal values) but *factual* in a JSON answer (there a wrong value is a wrong fact; the
bundled data annotates them so). The ``name`` of a tool call is the decisive token of the call:
verification (Table 2: "tool-call invocations"), level 2.

Why these: they are the tokens where a wrong prediction breaks the output's *form* (an unclosed
brace, a misspelled schema key, a missing field) even when the content is right, so they carry
more weight per token than the prose around them.

JSON is found by trying ``json.JSONDecoder.raw_decode`` at every ``{`` / ``[`` that is not inside an
already parsed object; only a successful parse is tagged, so braces in prose are left alone.
"""

from __future__ import annotations

import json
import re
from typing import List, Tuple

Span = Tuple[int, int, int, str]  # (start, end, level, category)

CLOSERS = set(")]}」』”’》〉")
PAIRS = dict(zip("([{「『“‘《〈", ")]}」』”’》〉"))
# one JSON lexeme: a string, a number, a literal, or punctuation
JSON_LEX = re.compile(
    r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null|[{}\[\]:,]'
)
BULLET = r"(?:[-*•][ \t]+|\d+[.)][ \t]+|#{1,6}[ \t]+)"
FIELD_LINE = re.compile(rf"^[ \t]*{BULLET}([\w'’-]+|\S)", re.MULTILINE)
# "Key: value" lines (optionally bulleted); the key is at most three words
KEY_LINE = re.compile(
    rf"^[ \t]*{BULLET}?([^\s:：*#-][^:\n：]{{0,30}}?)[ \t]*[:：][ \t]+\S", re.MULTILINE
)
# names of tool-call invocations in JSON (Table 2 puts invocations under verification)
TOOL_NAME_KEYS = {"name", "tool", "function"}


def json_spans(text: str) -> Tuple[List[Span], List[Tuple[int, int]]]:
    """Spans of keys, literal values and closing brackets of every JSON value in ``text``.

    Returns (spans, regions): ``regions`` are the parsed JSON extents, which other rules skip.
    """
    dec = json.JSONDecoder()
    spans: List[Span] = []
    regions: List[Tuple[int, int]] = []
    i = 0
    while i < len(text):
        if text[i] not in "{[":
            i += 1
            continue
        try:
            value, end = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            i += 1
            continue
        if not isinstance(value, (dict, list)) or end - i < 3:
            i += 1
            continue
        regions.append((i, end))
        # a tool call ({"name", "arguments"}): its arguments are schema literals (structural)
        call = (
            isinstance(value, dict)
            and "name" in value
            and ("arguments" in value or "parameters" in value)
        )
        lex = list(JSON_LEX.finditer(text, i, end))
        for k, m in enumerate(lex):
            tok = m.group()
            nxt = lex[k + 1].group() if k + 1 < len(lex) else ""
            prev = lex[k - 1].group() if k > 0 else ""
            if tok in "}]":
                spans.append((m.start(), m.end(), 1, "structural"))
            elif tok.startswith('"') and nxt == ":":
                # schema key: the name inside the quotes
                if m.end() - 1 > m.start() + 1:
                    spans.append((m.start() + 1, m.end() - 1, 1, "structural"))
            elif tok not in "{[:,":
                # literal value: in an answer the content a wrong token would falsify (factual),
                # in a tool call a schema literal (structural)
                cat, lvl = ("structural" if call else "factual"), 1
                if call and tok.startswith('"') and k >= 2 and prev == ":":
                    key = lex[k - 2].group().strip('"').lower()
                    if key in TOOL_NAME_KEYS:
                        cat, lvl = "verification", 2  # the tool being invoked (Table 2)
                s, e = (m.start() + 1, m.end() - 1) if tok.startswith('"') else m.span()
                if e > s:
                    spans.append((s, e, lvl, cat))
        i = end
    return spans, regions


def _inside(pos: int, regions: List[Tuple[int, int]]) -> bool:
    return any(s <= pos < e for s, e in regions)


def delimiter_spans(text: str, regions: List[Tuple[int, int]]) -> List[Span]:
    """Closing delimiters of balanced pairs and the second quote of each '"' pair."""
    out: List[Span] = []
    stack: List[str] = []
    dq_open = False
    for i, ch in enumerate(text):
        if _inside(i, regions):
            continue
        if ch in PAIRS:
            stack.append(PAIRS[ch])
        elif ch in CLOSERS:
            if stack and stack[-1] == ch:
                stack.pop()
                out.append((i, i + 1, 1, "structural"))
        elif ch == '"':
            if dq_open:
                out.append((i, i + 1, 1, "structural"))
            dq_open = not dq_open
        elif ch == "\n":
            dq_open = False
    return out


def field_spans(text: str, regions: List[Tuple[int, int]]) -> List[Span]:
    """First word of list items and headers, and the key of "Key: value" lines."""
    out: List[Span] = []
    for m in FIELD_LINE.finditer(text):
        if not _inside(m.start(1), regions):
            out.append((m.start(1), m.end(1), 1, "structural"))
    for m in KEY_LINE.finditer(text):
        if not _inside(m.start(1), regions) and len(m.group(1).split()) <= 3:
            out.append((m.start(1), m.end(1), 1, "structural"))
    return out


def bullet_regions(text: str) -> List[Tuple[int, int]]:
    """Extents of list bullets and numbering ("- ", "2. "): layout, not facts."""
    rx = re.compile(rf"^[ \t]*{BULLET}", re.MULTILINE)
    return [(m.start(), m.end()) for m in rx.finditer(text)]


def turn_initial_span(text: str) -> List[Span]:
    """The first word of the turn (Table 2: "turn-initial")."""
    m = re.search(r"\S+", text)
    if m is None:
        return []
    word = re.match(r"[\w'’-]+|\S", m.group())
    return [(m.start(), m.start() + len(word.group()), 1, "structural")]


def sentences(text: str) -> List[Tuple[int, int]]:
    """Sentence extents (ends at . ! ? 。 or a newline, keeping the terminator)."""
    # a terminator counts only before whitespace or the end, so "15.3" stays one sentence
    out = []
    start = 0
    for m in re.finditer(r"[.!?。]+(?=\s|$)|\n", text):
        if text[start : m.end()].strip():
            out.append((start, m.end()))
        start = m.end()
    if text[start:].strip():
        out.append((start, len(text)))
    return out
