"""English factual seeding by heuristics (no NER model: nothing may be downloaded).

Three rules, each cheap and explainable:
- numbers with their currency but not their unit ("42" in "42 km", "$3.50", "15.3", "1,024");
- dates ("July 17, 1948", "17 July 1948", "2024-05-01");
- capitalised entities: runs of capitalised words ("New York City", "Marie Curie"), allowing
  "of"/"the"/"de" inside a run. A sentence-initial capitalised word counts only when it is not a
  common sentence opener (``OPENERS``): "Seoul is ..." is an entity, "The answer ..." is not.
"""

from __future__ import annotations

import re
from typing import List, Tuple

MONTHS = (
    "January|February|March|April|May|June|July|August|September|October|November|December|"
    "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
)
UNITS = (
    r"%|percent|km|kilometers?|kilometres?|m|meters?|metres?|cm|mm|kg|kilograms?|g|grams?|lbs?|"
    r"pounds?|miles?|feet|ft|inch(?:es)?|L|liters?|litres?|ml|°C|°F|degrees?|years?|months?|"
    r"weeks?|days?|hours?|minutes?|seconds?|won|dollars?|euros?|people|times"
)
DATE = re.compile(
    rf"\b(?:(?:{MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?"
    rf"|\d{{1,2}}\s+(?:{MONTHS})(?:,?\s+\d{{4}})?"
    rf"|\d{{4}}-\d{{2}}-\d{{2}}"
    rf"|(?<![\d:])\d{{1,2}}:\d{{2}}(?![\d:]))\b"
)
# the unit is left out: the number is what a wrong prediction gets wrong (UNITS kept for docs)
NUMBER = re.compile(r"(?:[$€£₩]\s?)?(?<![\w.])[-+]?\d+(?:[.,]\d+)*(?:[.,](?=\d))?")
COPULA = re.compile(
    r"\b(?:is|was|are|were|be)\s+(?:the\s+|a\s+|an\s+|number\s+|about\s+)?"
    r"((?:[A-Za-z0-9'’.-]+\s+){0,2}[A-Za-z0-9'’-]+)\s*[.!]?\s*$"
)
# Latin letters only: \w would swallow a Korean particle glued to a name ("Cl입니다")
CAP_WORD = r"[A-ZÀ-Þ][A-Za-zÀ-ÿ0-9'’.-]*[A-Za-zÀ-ÿ0-9]|[A-Z]"
LINK = r"(?:(?:of|the|de|von|van|da)[ \t]+)?"
ENTITY = re.compile(rf"\b(?:{CAP_WORD})(?:[ \t]+{LINK}(?:{CAP_WORD}))*\b")
OPENERS = {
    "The",
    "A",
    "An",
    "This",
    "That",
    "These",
    "Those",
    "It",
    "Its",
    "I",
    "We",
    "You",
    "He",
    "She",
    "They",
    "In",
    "On",
    "At",
    "For",
    "From",
    "So",
    "But",
    "And",
    "Or",
    "If",
    "When",
    "While",
    "Yes",
    "No",
    "Let",
    "Here",
    "There",
    "First",
    "Second",
    "Third",
    "Then",
    "Next",
    "Finally",
    "Now",
    "Therefore",
    "Thus",
    "Hence",
    "Sure",
    "Of",
    "To",
    "As",
    "By",
    "With",
    "My",
    "Your",
    "Our",
    "Their",
    "His",
    "Her",
    "What",
    "Which",
    "Who",
    "Whom",
    "How",
    "Why",
    "Where",
    "Step",
    "Answer",
    "Note",
    "Please",
    "Sorry",
    "Actually",
    "Wait",
    "Oops",
    "Hmm",
    "Okay",
    "OK",
    "Great",
    "Good",
    "Because",
    "Since",
    "After",
    "Before",
    "Each",
    "Every",
    "All",
    "Some",
    "Many",
    "Most",
    "One",
    "Two",
    "Three",
    "Is",
    "Are",
    "Was",
    "Were",
    "Do",
    "Does",
    "Did",
    "Can",
    "Could",
    "Would",
    "Should",
    "Will",
    "Also",
    "However",
    "Instead",
    "Thanks",
    "Thank",
    "Hello",
    "Hi",
    "Total",
    "Result",
    "Multiply",
    "Add",
    "Subtract",
    "Divide",
    "Convert",
    "Check",
    "Correct",
    "Verified",
    "Other",
    "Any",
    "Not",
    "Just",
    "Only",
    "Both",
    "Using",
    "Given",
    "Same",
    "Overall",
}
SENTENCE_END = re.compile(r"(?:^|[.!?:\n]\s*|[\"“(]\s*)$")


def _sentence_initial(text: str, start: int) -> bool:
    return SENTENCE_END.search(text[max(0, start - 4) : start]) is not None or start == 0


def _is_name(text: str, word: str, pos: int) -> bool:
    """A lone sentence-initial capitalised word is a name when it is an acronym, holds a digit,
    or appears capitalised in mid-sentence elsewhere in the text."""
    if (word.isupper() and len(word) > 1) or any(ch.isdigit() for ch in word):
        return True
    for m in re.finditer(rf"\b{re.escape(word)}\b", text):
        if m.start() != pos and not _sentence_initial(text, m.start()):
            return True
    return False


def copula_complement(sentence: str, offset: int = 0) -> List[Tuple[int, int]]:
    """The last word of "... is/was [the] X." (the answer of an answer sentence), if any."""
    m = COPULA.search(sentence)
    if m is None:
        return []
    last = list(re.finditer(r"[A-Za-z0-9'’-]+", m.group(1)))[-1]
    s = m.start(1) + last.start()
    return [(offset + s, offset + s + len(last.group()))]


def factual_spans(text: str) -> List[Tuple[int, int]]:
    """Character spans of dates, numbers with units, and capitalised entities."""
    spans: List[Tuple[int, int]] = []
    taken = [False] * len(text)

    def add(s: int, e: int) -> None:
        if e > s and not any(taken[s:e]):
            spans.append((s, e))
            taken[s:e] = [True] * (e - s)

    for m in DATE.finditer(text):
        add(m.start(), m.end())
    for m in NUMBER.finditer(text):
        add(m.start(), m.end())
    for m in ENTITY.finditer(text):
        words = m.group().split()
        s = m.start()
        # drop leading opener words ("The Eiffel Tower" -> "Eiffel Tower" only if "The" opens)
        while words and words[0] in OPENERS and (_sentence_initial(text, s) or words[0] == "I"):
            s = text.index(words[0], s) + len(words[0])
            s += len(text[s:]) - len(text[s:].lstrip())
            words = words[1:]
        if not words:
            continue
        if len(words) == 1 and (words[0] in OPENERS or re.fullmatch(r"I['’][a-z]+", words[0])):
            continue  # openers and I'd / I'm / I'll
        if len(words) == 1 and _sentence_initial(text, s) and not _is_name(text, words[0], s):
            continue  # "Calling the tool": a capitalised sentence opener, not a name
        if len(words) == 1 and words[0].isupper() and len(words[0]) == 1:
            continue  # single capital letters: variables, "A" as an option label
        add(s, m.end())
    return sorted(spans)
