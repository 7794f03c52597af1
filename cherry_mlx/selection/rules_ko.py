"""Korean factual seeding with a real morphological analyser (kiwipiepy, offline).

Kiwi's POS tags (Sejong tag set) give exactly the classes Table 2 calls factual: NNP proper nouns,
SN numbers (1948 in 1948년), SL foreign words (acronyms and Latin names inside Korean text, e.g.
GPU, MLX), SH hanja; and the copula complement ("정답은 금입니다": 금) as an answer candidate.
Offsets are Kiwi's character offsets on the exact text, so spans stay exact (no normalisation
happens before tagging).
"""

from __future__ import annotations

import functools
import re
from typing import List, Tuple

from cherry_mlx.selection.rules_struct import sentences

HANGUL = re.compile(r"[\uac00-\ud7a3]")
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


@functools.lru_cache(maxsize=200_000)
def _analyse(sentence: str) -> Tuple[Tuple[str, str, int, int], ...]:
    """(form, tag, start, end) per morpheme of one sentence, cached: Kiwi costs ~50-350 ms per
    call on a busy 2-core machine, and chat data repeats its explanatory sentences a lot."""
    return tuple((t.form, t.tag, t.start, t.start + t.len) for t in _kiwi().tokenize(sentence))


def morphemes(text: str) -> List[Tuple[str, str, int, int]]:
    """Kiwi morphemes of ``text`` with offsets into ``text``, analysed sentence by sentence."""

    out: List[Tuple[str, str, int, int]] = []
    for s, e in sentences(text):
        if has_hangul(text[s:e]):
            out += [(f, t, a + s, b + s) for f, t, a, b in _analyse(text[s:e])]
    return out


def factual_spans(text: str) -> List[Tuple[int, int]]:
    """Character spans of proper nouns, numbers, foreign words and hanja.

    The counter or unit after a number (년, 번, km) is left out: the number is what a wrong
    prediction gets wrong, the counter is implied by the question. Adjacent hits separated by at
    most one space merge ("워싱턴 D.C.", "1948 7" never occurs without a counter between them).
    """
    spans: List[List[int]] = []
    prev_hit = False
    for _, tag, start, end in morphemes(text):
        hit = tag in FACTUAL_TAGS
        if hit and prev_hit and spans and text[spans[-1][1] : start] in ("", " "):
            spans[-1][1] = end
        elif hit:
            spans.append([start, end])
        prev_hit = hit
    return [(s, e) for s, e in spans if text[s:e].strip()]


def copula_complements(text: str) -> List[Tuple[int, int]]:
    """Spans of the noun right before the copula 이다 ("정답은 금입니다" -> 금): in an answer
    sentence that is the answer. A number followed by a counter ("13번이다") gives the number."""
    out: List[Tuple[int, int]] = []
    toks = morphemes(text)
    for i, (_, tag, _, _) in enumerate(toks):
        if tag != "VCP" or i == 0:
            continue
        j = i - 1
        if toks[j][1] == "NNB" and j > 0 and toks[j - 1][1] == "SN":
            j -= 1
        if toks[j][1].startswith("NN") or toks[j][1] in FACTUAL_TAGS or toks[j][1] == "XR":
            out.append((toks[j][2], toks[j][3]))
    return out
