"""Super-GT: the most decisive token of an answer (level 2, "answer-final tokens", paper §3.2.1).

Which sentence answers the question: the one sharing the most character bigrams with the user's
question (answers restate it: "염소의 원소 기호는 Cl입니다" for "염소의 원소 기호는 무엇인가요?");
without a question, or when no sentence shares two bigrams with it, the last sentence with an
answer cue (정답, 따라서, the answer, so ...), else the last sentence holding a candidate.

Which token in it: the last candidate that the question does not already contain (the subject is
restated, the answer is new). Candidates are the factual spans, the results of arithmetic steps,
JSON literal values and the copula complement ("정답은 금입니다" -> 금, "The answer is potassium"
-> potassium), which catches common nouns the entity rules miss. It keeps its rule's category.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import List, Optional, Tuple

from cherry_mlx.selection import markers, rules_en, rules_ko, rules_struct

Cand = Tuple[int, int, str]  # (start, end, category)


def _bigrams(text: str) -> set:
    t = "".join(text.lower().split())
    return {t[i : i + 2] for i in range(len(t) - 1)}


def answer_sentence(
    text: str, cands: List[Cand], question: Optional[str]
) -> Optional[Tuple[int, int]]:
    sents = rules_struct.sentences(text)
    if question:
        qb = _bigrams(question)
        best, best_n = None, 1
        for s, e in sents:
            n = len(qb & _bigrams(text[s:e]))
            if n > best_n or (n == best_n and best is not None and n > 1):
                best, best_n = (s, e), n
        if best is not None:
            return best
    starts = sorted(c[0] for c in cands)  # bisect per sentence: linear in text + candidates
    holding = [(s, e) for s, e in sents if bisect_left(starts, e) > bisect_left(starts, s)]
    cued = [se for se in holding if markers.ANSWER_CUES.search(text[se[0] : se[1]])]
    return (cued or holding or [None])[-1]


def copula_candidates(text: str, sent: Tuple[int, int]) -> List[Cand]:
    s, e = sent
    if rules_ko.has_hangul(text[s:e]):
        return [(a + s, b + s, "factual") for a, b in rules_ko.copula_complements(text[s:e])]
    return [(a, b, "factual") for a, b in rules_en.copula_complement(text[s:e], s)]


def super_gt(text: str, cands: List[Cand], question: Optional[str] = None):
    """[(start, end, 2, category)] for the decisive token of ``text`` (empty when none)."""
    sent = answer_sentence(text, cands, question)
    if sent is None:
        return []
    s, e = sent
    q = (question or "").lower()
    inside = [c for c in cands if s <= c[0] < e]
    new = [c for c in inside if text[c[0] : c[1]].lower() not in q]
    if not new:  # no rule candidate says anything new: fall back to the copula complement
        cop = [c for c in copula_candidates(text, sent) if text[c[0] : c[1]].lower() not in q]
        inside, new = inside + cop, cop
    pick = new or inside
    if not pick:
        return []
    last = max(pick)
    return [(last[0], last[1], 2, last[2])]


def corrected_values(cands: List[Cand], pivots: List[Tuple[int, int]], reach: int = 160):
    """SSGT of an Atcha moment is the pivot *and* the corrected answer (paper §3.2.5: "아차, 틀렸다"
    + corrected answer keyword): the first candidate within ``reach`` characters after each
    self-correction marker becomes level 3, self_correction."""
    out = []
    for _, pe in pivots:
        after = [c for c in cands if pe <= c[0] < pe + reach]
        if after:
            c = min(after)
            out.append((c[0], c[1], 3, "self_correction"))
    return out
