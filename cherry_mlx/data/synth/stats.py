"""GT statistics of span-annotated data: GT share of response tokens, level and category shares.

Three units, because the tokenizer may not exist yet when the data is built: non-space characters,
whitespace-separated words, and (when a ``tokenizer.json`` is given) real tokens. A unit is GT
when it overlaps a span; its category and level are those of the highest-level span it overlaps.
The paper's figures to compare with: 15.3% GT, categories 41/23/18/8/6/4%
(factual/structural/reasoning/self_correction/guardrail/verification).
"""

from __future__ import annotations

import re
from collections import Counter

from cherry_mlx.data.categories import CATEGORIES
from cherry_mlx.data.jsonl import assistant_pieces

PAPER_SHARES = {
    "factual": 0.41,
    "structural": 0.23,
    "reasoning": 0.18,
    "self_correction": 0.08,
    "guardrail": 0.06,
    "verification": 0.04,
}
_WORD = re.compile(r"\S+")


def _units(text: str, unit: str, tokenizer=None) -> list[tuple[int, int]]:
    """(start, end) character ranges of the units of ``text``."""
    if unit == "char":
        return [(i, i + 1) for i, c in enumerate(text) if not c.isspace()]
    if unit == "word":
        return [m.span() for m in _WORD.finditer(text)]
    enc = tokenizer.encode(text, add_special_tokens=False)
    return [(s, e) for s, e in enc.offsets if e > s]


def _label(span_list, s: int, e: int):
    best = None
    for sp in span_list:
        if sp["start"] < e and s < sp["end"] and (best is None or sp["level"] > best["level"]):
            best = sp
    return best


def gt_stats(records, unit: str = "char", tokenizer=None) -> dict:
    """Counts over every assistant turn of ``records`` (dicts in the ``messages`` shape): its
    content and the canonical text of each of its tool calls (``jsonl.tool_call_text``)."""
    total, levels, cats = 0, Counter(), Counter()
    for rec in records:
        for m in rec["messages"]:
            if m["role"] != "assistant":
                continue
            for text, spans in assistant_pieces(m):  # content, then each tool call
                for s, e in _units(text, unit, tokenizer):
                    total += 1
                    sp = _label(spans or [], s, e)
                    if sp is not None:
                        levels[sp["level"]] += 1
                        cats[sp["category"]] += 1
    n_gt = sum(levels.values())
    return {
        "unit": unit,
        "response_units": total,
        "gt_units": n_gt,
        "gt_share": n_gt / max(total, 1),
        "level_share": {k: levels[k] / max(total, 1) for k in (1, 2, 3)},
        "category_share": {c: cats[c] / max(n_gt, 1) for c in CATEGORIES},
    }


def load_hf_tokenizer(path):
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json``, or None when there is none."""
    import os

    if path is None or not os.path.exists(path):
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def family_counts(records) -> dict:
    return dict(sorted(Counter(r["id"].split(":")[0] for r in records).items()))


def format_stats(st: dict) -> str:
    cats = " ".join(f"{c} {st['category_share'][c]:.0%}" for c in CATEGORIES)
    lv = st["level_share"]
    return (
        f"GT share {st['gt_share']:.1%} of {st['response_units']:,} response {st['unit']}s "
        f"(super-GT {lv[2]:.1%}, SSGT {lv[3]:.2%}); categories: {cats}"
    )
