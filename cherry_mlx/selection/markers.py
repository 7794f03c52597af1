"""Marker vocabularies for the meta-cognitive (SSGT) and reasoning categories (paper Table 2).

The paper's SSGT "moments" (Section 3.2.5) are signalled by short, closed-class phrases: "아차" /
"Oops" for self-correction (Atcha), "잠깐" / "Wait" for verification (Jamkkan), "죄송" /
"I can't" for refusal (guardrail). A closed list is the right tool for a closed class: it is
precise, explainable, and the contrastive refinement (``refine.py``) catches what the list misses.
Each entry is a regular expression matched case-insensitively on the assistant text; the whole
match becomes the span.

Governance special tokens (``<|spartan_*|>``) that appear literally in assistant text are tagged by
the category their name implies (``SPECIAL_CATEGORIES``); turn markers stay untagged because the
response mask, not the GT mask, is what supervises them.
"""

from __future__ import annotations

import re
from typing import Dict, List, Tuple

# (category, level, [patterns]). Level 3 = SSGT (meta-cognitive pivot), 1 = GT.
MARKERS: List[Tuple[str, int, List[str]]] = [
    (
        "self_correction",
        3,
        [
            r"아차",
            r"앗",
            r"틀렸\w*",
            r"틀린\s*것\s*같",
            r"잘못\s*(?:계산|말|생각|알)\w*",
            r"정정\w*",
            r"\boops\b",
            r"(?:^|(?<=[.!?]\s)|(?<=\n))actually\b",
            r"\bi made (?:a|an) (?:mistake|error)\b",
            r"\bmy mistake\b",
            r"\bcorrection\b",
            r"\bthat(?:'s| is| was) (?:wrong|incorrect)\b",
            r"\bi was wrong\b",
            r"\blet me correct\b",
        ],
    ),
    (
        "verification",
        3,
        [
            r"잠깐\w*",
            r"확인해\s*(?:보겠|볼게|봅시다|보자)\w*",
            r"확인하겠\w*",
            r"검증\w*",
            r"검산\w*",
            r"비교\w*",
            # verdicts of a fact check (the "verified conclusion" of a Jamkkan moment)
            r"사실과\s*다릅니다",
            r"맞습니다",
            r"(?<=\bis )(?:correct|wrong|incorrect)\b|(?<=\bwas )(?:correct|wrong|incorrect)\b",
            r"\bcompare\w*\b",
            r"\bcross-check\w*\b",
            r"\bwait\b",
            r"\blet me (?:check|verify|double-check|confirm)\b",
            r"\bdouble-check\w*\b",
            r"\bverif(?:y|ied|ying|ication)\b",
            r"\bcheck(?:ing)?\b",
        ],
    ),
    (
        "guardrail",
        3,
        [
            r"죄송\w*",
            r"(?:도와\s*드릴|도움을\s*드릴|알려\s*드릴|드릴|제공할|답변할|할)\s*수\s*없\w*",
            r"거절\w*",
            r"불법\w*",
            r"\bi(?: can't| cannot| can not| won't| will not| am unable to|'m unable to)"
            r"(?: help(?: with (?:that|this))?)?\b",
            r"\bcannot help\b",
            r"\bi'?m sorry\b",
            r"\bsorry\b",
            r"\bunable to (?:help|assist|provide)\b",
            r"\billegal\b",
        ],
    ),
]

# Logical connectives that carry entailment (Table 2 "reasoning": CoT sentence pivots).
REASONING: List[str] = [
    r"따라서",
    r"그러므로",
    r"그래서",
    r"즉",
    r"왜냐하면",
    r"결국",
    r"그러면",
    r"\btherefore\b",
    r"\bthus\b",
    r"\bhence\b",
    r"(?:^|(?<=[.!?]\s)|(?<=\n))so\b",
    r"\bbecause\b",
    r"\bwhich means\b",
    r"\bthat means\b",
]

# Answer cues: a sentence holding one of these is the answer sentence (for super-GT).
ANSWER_CUES = re.compile(
    r"정답|답은|답:|결론|따라서|그러므로|결과는|answer|therefore|thus|result|so the|total",
    re.IGNORECASE,
)

# Governance special tokens (cherry_mlx.tokenizer.specials) that mark a GT moment, by piece name.
# Turn markers, bos/eos/pad and the tool list are context, not GT. Unknown ``<|...|>`` pieces of
# other tokenizers fall back to the name fragments of SPECIAL_FRAGMENTS.
SPECIAL_CATEGORIES: Dict[str, Tuple[str, int]] = {
    "spartan_refuse": ("guardrail", 3),
    "spartan_safe": ("guardrail", 3),
    "spartan_unsure": ("guardrail", 3),
    "spartan_atcha": ("self_correction", 3),
    "spartan_jamkkan": ("verification", 3),
    "spartan_verified": ("verification", 3),
    "spartan_tool": ("verification", 1),  # a tool-call invocation (Table 2)
    "spartan_tool_end": ("structural", 1),  # closing delimiter
    "spartan_think_end": ("structural", 1),
    "spartan_answer": ("structural", 1),
    "spartan_context_end": ("structural", 1),
    "spartan_think": ("reasoning", 1),
}
SPECIAL_FRAGMENTS: List[Tuple[str, str, int]] = [
    ("refus", "guardrail", 3),
    ("correct", "self_correction", 3),
    ("verif", "verification", 3),
]
SPECIAL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]+\|>")


def _compile(patterns: List[str]) -> re.Pattern:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


COMPILED: List[Tuple[str, int, re.Pattern]] = [(c, lvl, _compile(p)) for c, lvl, p in MARKERS]
REASONING_RE = _compile(REASONING)


def special_category(token: str) -> Tuple[str, int] | None:
    """Category and level of a governance special token, or None for turn markers and the rest."""
    name = token.strip("<|>").lower()
    if name in SPECIAL_CATEGORIES:
        return SPECIAL_CATEGORIES[name]
    if name.startswith("spartan_"):
        return None
    for frag, cat, lvl in SPECIAL_FRAGMENTS:
        if frag in name:
            return cat, lvl
    return None


def marker_spans(text: str) -> List[Tuple[int, int, int, str]]:
    """(start, end, level, category) for every marker, reasoning connective and special token."""
    out: List[Tuple[int, int, int, str]] = []
    for cat, lvl, rx in COMPILED:
        out += [(m.start(), m.end(), lvl, cat) for m in rx.finditer(text) if m.end() > m.start()]
    for m in REASONING_RE.finditer(text):
        # Korean connectives are whole words: 즉 inside 즉시 is not a connective.
        end_ok = m.end() == len(text) or not text[m.end()].isalnum()
        start_ok = m.start() == 0 or not text[m.start() - 1].isalnum()
        if end_ok and start_ok:
            out.append((m.start(), m.end(), 1, "reasoning"))
    for m in SPECIAL_TOKEN.finditer(text):
        hit = special_category(m.group())
        if hit is not None:
            out.append((m.start(), m.end(), hit[1], hit[0]))
    return out


def category_table() -> Dict[str, List[str]]:
    """The marker vocabularies by category (for docs and ``cherry-mlx tag --show-rules``)."""
    table = {cat: list(p) for cat, _, p in MARKERS}
    table["reasoning"] = list(REASONING)
    return table


# The safe redirect of a guardrail moment (paper §3.2.5: breaking token + refusal pivot + safe
# redirect): what the model offers instead. Only looked for in a turn that refuses.
REDIRECT_KO = re.compile(
    r"대신\s+(\S(?:[^.\n]{0,30}?\S)?)(?=(?:에\s*(?:대해|관해)\w*|을|를|은|는|이라면)(?:\s|$))"
)
REDIRECT_EN = re.compile(
    r"\binstead,?\s+(?:i(?:'d| would| can| could)\s+(?:be (?:glad|happy) to\s+|gladly\s+)?"
    r"(?:explain|help with|tell you about|talk about|share|suggest|describe)\s+)?"
    r"([^.!?\n]{1,60}?)(?=[.!?\n]|$)",
    re.IGNORECASE,
)


def redirect_spans(text: str) -> List[Tuple[int, int, int, str]]:
    """(start, end, 1, "guardrail") for the safe redirect after 대신 / instead."""
    out = []
    for rx in (REDIRECT_KO, REDIRECT_EN):
        for m in rx.finditer(text):
            if m.group(1).strip():
                out.append((m.start(1), m.end(1), 1, "guardrail"))
    return out
