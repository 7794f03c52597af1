"""Arithmetic steps in chain-of-thought (Table 2 "reasoning": core CoT pivots).

In ``12 × 3 = 36`` the operands restate what the question gave, while the result after ``=`` is
what the step *derives*: a wrong result derails every later step, a restated operand does not.
So the result is reasoning GT and the operands are excluded from the factual number rule.
"""

from __future__ import annotations

import re
from typing import List, Tuple

NUM = r"\d[\d,]*(?:\.\d+)?%?"
OP = r"[×x*+−\-÷/]"
STEP = re.compile(rf"(?<![\w.])({NUM}(?:[ \t]*{OP}[ \t]*{NUM})+)[ \t]*=[ \t]*({NUM})")


def step_spans(text: str) -> Tuple[List[Tuple[int, int]], List[Tuple[int, int]]]:
    """(operand regions, result spans) of every ``a op b [op c ...] = r`` in ``text``."""
    operands, results = [], []
    for m in STEP.finditer(text):
        operands.append(m.span(1))
        s, e = m.span(2)
        # a trailing thousands comma or percent is punctuation of the sentence, not of the number
        while e > s and text[e - 1] == ",":
            e -= 1
        results.append((s, e))
    return operands, results
