"""Assistant text with GT spans known by construction, plus the small Korean helpers it needs.

The generators write a response piece by piece: ``add`` for plain (non-GT) prose and ``gt`` for a
span whose level and category are decided by the generator itself, so every character offset is
exact without any after-the-fact search. Spans are stored as tokenizer-independent
character spans ``{"start", "end", "level", "category"}`` on the assistant ``content`` (or, for a
tool call, on its canonical text: ``tools.call_turn``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cherry_mlx.data.categories import CATEGORIES


@dataclass
class Response:
    """An assistant turn under construction: text pieces plus the spans that cover GT pieces."""

    parts: list = field(default_factory=list)
    spans: list = field(default_factory=list)
    length: int = 0

    def add(self, text: str) -> "Response":
        """Append non-GT text."""
        self.parts.append(text)
        self.length += len(text)
        return self

    def gt(self, text: str, category: str, level: int = 1) -> "Response":
        """Append ``text`` as one GT span. Spans never start or end with whitespace, so that a
        span maps onto the tokens of the words themselves under any tokenizer."""
        assert category in CATEGORIES, category
        assert level in (1, 2, 3), level
        assert text and text == text.strip(), repr(text)
        self.spans.append(
            {
                "start": self.length,
                "end": self.length + len(text),
                "level": level,
                "category": category,
            }
        )
        return self.add(text)

    def fill(self, template: str, **slots) -> "Response":
        """Append ``template`` with ``{name}`` or ``{name:은는}`` slots (a particle after the
        slot). A slot is ``(text, category, level)`` (a GT span) or a plain string (non-GT)."""
        pos = 0
        for m in _SLOT.finditer(template):
            if m.start() > pos:
                self.add(template[pos : m.start()])
            value = slots[m.group(1)]
            text = value if isinstance(value, str) else value[0]
            if isinstance(value, str):
                self.add(text)
            else:
                self.gt(text, value[1], value[2])
            if m.group(2):
                self.add(particle(text, m.group(2)))
            pos = m.end()
        if pos < len(template):
            self.add(template[pos:])
        return self

    def message(self) -> dict:
        """The finished assistant message in the ``messages`` JSONL shape."""
        return {"role": "assistant", "content": "".join(self.parts), "gt": list(self.spans)}


def example(family: str, qid: str, lang: str, messages: list, tools: list | None = None) -> dict:
    """One JSONL record. ``id`` is ``family:qid:lang``; ``qid`` is the question identity that
    the train/valid/test split is made on (the same fact asked in either language, by any family,
    shares one qid, so no split sees another split's question)."""
    assert ":" not in qid, qid
    rec = {"id": f"{family}:{qid}:{lang}", "messages": messages}
    if tools:
        rec["tools"] = tools
    return rec


def qid_of(record: dict) -> str:
    """The question identity of a record written by ``example``."""
    return record["id"].split(":")[1]


_SLOT = re.compile(r"\{(\w+)(?::(\w+))?\}")


# ---- Korean particles ------------------------------------------------------------------------
# Digits read as Sino-Korean numerals: does the reading end in a final consonant (batchim)?
_DIGIT_FINAL = {
    "0": True,
    "1": True,
    "2": False,
    "3": True,
    "4": False,
    "5": False,
    "6": True,
    "7": True,
    "8": True,
    "9": False,
}


def _final(word: str) -> tuple[bool, bool]:
    """(has batchim, batchim is ㄹ) for the last pronounceable character of ``word``."""
    for ch in reversed(word):
        if "가" <= ch <= "힣":
            jong = (ord(ch) - 0xAC00) % 28
            return jong != 0, jong == 8
        if ch.isdigit():
            return _DIGIT_FINAL[ch], ch in "178"
        if ch.isalpha():
            return ch.lower() in "lmn", ch.lower() == "l"
    return False, False


def josa(word: str, pair: str) -> str:
    """``word`` followed by the right particle: pair is one of 은/는, 이/가, 을/를, 과/와, 으로/로,
    이다/다 (written as "은는", "이가", "을를", "과와", "으로", "이다"); anything else is
    appended as it is."""
    fin, rieul = _final(word)
    if pair == "으로":
        return word + ("으로" if fin and not rieul else "로")
    if pair == "이다":
        return word + ("이다" if fin else "다")
    if pair in ("은는", "이가", "을를", "과와"):
        return word + (pair[0] if fin else pair[1])
    return word + pair  # a particle that does not alternate (의, 에, 에서는)


def particle(word: str, pair: str) -> str:
    """Only the particle ``josa`` would attach to ``word`` (for text written after a GT span)."""
    return josa(word, pair)[len(word) :]
