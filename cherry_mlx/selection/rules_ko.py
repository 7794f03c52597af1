"""Korean factual seeding with a real morphological analyser (kiwipiepy, offline).

Kiwi's POS tags (Sejong tag set) give exactly the classes Table 2 calls factual: NNP proper nouns,
SN numbers (with the counter or unit noun that follows: 1948년, 42킬로미터, 3개), SL foreign words
(acronyms and Latin names inside Korean text, e.g. GPU, MLX), SH hanja. Adjacent hits are merged
into one span so that "1948년 7월 17일" is a single date. Offsets are Kiwi's character offsets on
the exact text, so spans stay exact (no normalisation happens before tagging).
"""

from __future__ import annotations

import functools
import re
from typing import List, Tuple

HANGUL = re.compile(r"[\uac00-\ud7a3]")
# Nouns that make a number a date, quantity or amount (beside every NNB bound noun).
UNIT_NOUNS = {
    "년", "월", "일", "시", "분", "초", "세", "살", "개", "명", "원", "달러", "도", "층",
    "번", "배", "퍼센트", "미터", "킬로미터", "센티미터", "킬로그램", "그램", "리터",
    "km", "kg", "cm", "m", "g",
}
FACTUAL_TAGS = {"NNP", "SN", "SL", "SH"}


def has_hangul(text: str) -> bool:
    return HANGUL.search(text) is not None


@functools.lru_cache(maxsize=1)
def _kiwi():
    try:
        from kiwipiepy import Kiwi
    except ImportError as err:  # pragma: no cover - kiwipiepy is a dependency
        raise ValueError(
            "Korean tagging needs kiwipiepy: pip install kiwipiepy (runs offline, no downloads)"
        ) from err
    return Kiwi()


def factual_spans(text: str) -> List[Tuple[int, int]]:
    """Character spans of proper nouns, numbers with their units, dates and foreign words."""
    toks = _kiwi().tokenize(text)
    spans: List[List[int]] = []
    prev_hit = False
    for tok in toks:
        start, end = tok.start, tok.start + tok.len
        tag = tok.tag
        hit = tag in FACTUAL_TAGS
        # a unit/counter right after a number belongs to the number (1948년, 3 킬로미터, 50%)
        unit = prev_hit and (
            tag == "NNB" or tok.form in UNIT_NOUNS or (tag == "SW" and tok.form in "%℃°")
        )
        gap = text[spans[-1][1]:start] if spans else None
        if (hit or unit) and spans and prev_hit and gap is not None and gap.strip() == "":
            # merge with the previous span when only whitespace separates them (dates, full names)
            if unit or len(gap) <= 1:
                spans[-1][1] = end
                prev_hit = True
                continue
        if hit:
            spans.append([start, end])
            prev_hit = True
        else:
            prev_hit = False
    return [(s, e) for s, e in spans if text[s:e].strip()]
