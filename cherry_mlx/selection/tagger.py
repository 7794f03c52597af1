"""Rule-based GT tagging (paper §3.2.2 steps 1-2) over chat JSONL.

Annotations are character spans on the assistant text, ``{"start", "end", "level",
"category"}`` (level 1 GT, 2 super-GT, 3 SSGT), stored on each assistant message as ``"gt"`` (on
each of its ``tool_calls``, offsets into the call's canonical text ``jsonl.tool_call_text``; on
the record for ``prompt``/``completion`` and ``text`` data). Tagging works on the text so the spans
stay tokenizer-independent; the *statistics* are measured on the token sequence the model sees
(chat template and special tokens included) through the data pipeline's encoder
(``tag_report.py``).

Seeding rules, each a small module: Korean proper nouns / numbers / dates via Kiwi POS tags
(``rules_ko``), English heuristics (``rules_en``), JSON keys and literals, closing delimiters and
structured-output fields (``rules_struct``), marker vocabularies and special tokens (``markers``),
and one super-GT per answer (``answer.py``: the new candidate in the sentence answering the
user), plus the corrected value after a self-correction pivot and the safe redirect after a
refusal (SSGT moments, paper §3.2.5).

Overlaps are resolved per character: the higher level wins, then the category earlier in
``PRIORITY`` (a refusal phrase containing a number is guardrail, not factual). Runs of characters
with the same (level, category) become one span, never starting or ending with whitespace. The
result is a pure function of the text, so tagging is idempotent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

from cherry_mlx.data.categories import CATEGORIES
from cherry_mlx.data.jsonl import tool_call_text
from cherry_mlx.selection import answer, markers, rules_en, rules_ko, rules_math, rules_struct

PRIORITY = ("guardrail", "self_correction", "verification", "factual", "structural", "reasoning")
RawSpan = Tuple[int, int, int, str]


@dataclass
class TagConfig:
    """Which seeding rules run. Defaults are the set measured on the bundled data (README)."""

    korean: bool = True  # Kiwi NNP/SN/SL/SH (numbers without their counters)
    english: bool = True  # numbers, dates, capitalised entities
    markers: bool = True  # self-correction / verification / refusal / reasoning connectives
    json: bool = True  # tool-call and structured-output keys, literal values, closing brackets
    delimiters: bool = True  # closing quotes and brackets in prose
    fields: bool = True  # first word of list items, headers, "Key: value" keys
    turn_initial: bool = False  # first word of every turn (Table 2 lists it; noisy on prose)
    math: bool = True  # results of "a op b = r" steps are reasoning; operands are not factual
    super_gt: bool = True  # the new candidate of the sentence answering the question -> level 2
    overwrite: bool = False  # re-tag turns that already have spans


def seed_spans(
    text: str, cfg: TagConfig = TagConfig(), question: Optional[str] = None
) -> List[RawSpan]:
    """All raw (possibly overlapping) rule hits on ``text``; ``question`` is the user turn it
    answers (it locates the answer sentence for super-GT)."""
    raw: List[RawSpan] = []
    regions: List[Tuple[int, int]] = []
    if cfg.json:
        js, regions = rules_struct.json_spans(text)
        raw += js
    factual: List[Tuple[int, int]] = []
    if cfg.korean and rules_ko.has_hangul(text):
        factual += rules_ko.factual_spans(text)
    if cfg.english:
        factual += rules_en.factual_spans(text)
    fields = rules_struct.field_spans(text, regions) if cfg.fields else []
    operands, results = rules_math.step_spans(text) if cfg.math else ([], [])
    # JSON and field keys are structural, step results reasoning, operands restated context:
    # the factual rules do not claim them
    taken = regions + [(s, e) for s, e, _, _ in fields] + rules_struct.bullet_regions(text)
    taken += operands + results
    factual = [(s, e) for s, e in factual if not any(a <= s < b for a, b in taken)]
    raw += [(s, e, 1, "factual") for s, e in factual]
    raw += [(s, e, 1, "reasoning") for s, e in results]
    if cfg.super_gt:
        # JSON literal values and step results compete for the answer-final token too
        answers = [(s, e, c) for s, e, _, c in raw if c == "factual"]
        answers += [(s, e, "reasoning") for s, e in results]
        raw += answer.super_gt(text, sorted(answers), question)
    if cfg.markers:
        found = markers.marker_spans(text)
        if any(c == "guardrail" for _, _, _, c in found):
            found += markers.redirect_spans(text)
        raw += found
        pivots = sorted((s, e) for s, e, _, c in found if c == "self_correction")
        if pivots:
            cands = [(s, e, c) for s, e, _, c in raw if c in ("factual", "reasoning")]
            cands = [c for c in cands if not any(a <= c[0] < b for a, b in pivots)]
            raw += answer.corrected_values(sorted(cands), pivots)
    if cfg.delimiters:
        raw += rules_struct.delimiter_spans(text, regions)
    raw += fields
    if cfg.turn_initial:
        raw += rules_struct.turn_initial_span(text)
    return raw


def merge_spans(text: str, raw: Iterable[RawSpan]) -> List[dict]:
    """Resolve overlaps per character (max level, then PRIORITY) into sorted, disjoint spans."""
    n = len(text)
    level = [0] * n
    rank = [len(PRIORITY)] * n
    for s, e, lvl, cat in raw:
        if cat not in CATEGORIES or not 1 <= lvl <= 3:
            raise ValueError(f"bad span level/category {lvl}/{cat!r}: levels are 1-3, {CATEGORIES}")
        r = PRIORITY.index(cat)
        for i in range(max(0, s), min(n, e)):
            if (lvl, -r) > (level[i], -rank[i]):
                level[i], rank[i] = lvl, r
    spans: List[dict] = []
    i = 0
    while i < n:
        if level[i] == 0 or text[i].isspace():
            i += 1
            continue
        j = i
        while j < n and level[j] == level[i] and rank[j] == rank[i]:
            j += 1
        end = j
        while end > i and text[end - 1].isspace():
            end -= 1
        spans.append({"start": i, "end": end, "level": level[i], "category": PRIORITY[rank[i]]})
        i = j
    return spans


def tag_text(text: str, cfg: TagConfig = TagConfig(), question: Optional[str] = None) -> List[dict]:
    """GT spans for one assistant text (``question``: the user turn it answers, optional)."""
    return merge_spans(text, seed_spans(text, cfg, question))


def _assistant_holders(m: dict) -> List[Tuple[dict, str]]:
    """(holder, text) of an assistant message: its content (when a string), then each tool call
    (its spans live on the call, offsets into ``tool_call_text``)."""
    out = [(m, m["content"])] if isinstance(m.get("content"), str) else []
    return out + [(tc, tool_call_text(tc)) for tc in m.get("tool_calls") or []]


def questions(example: dict) -> List[Optional[str]]:
    """The user turn each supervised text answers (aligned with ``supervised_texts``)."""
    if "messages" in example:
        out, last = [], None
        for m in example["messages"]:
            if m.get("role") == "user":
                last = m.get("content")
            elif m.get("role") == "assistant":
                out += [last] * len(_assistant_holders(m))
        return out
    if "completion" in example:
        return [example.get("prompt")]
    return [None]


def supervised_texts(example: dict) -> List[Tuple[dict, str]]:
    """(holder, text) of every supervised text of an example, its spans living in holder["gt"].

    ``messages``: every assistant turn's ``content`` (all turns are supervised: a multi-turn
    example teaches every answer) and each of its ``tool_calls`` (holder: the call; text: its
    canonical rendering, ``cherry_mlx.data.jsonl.tool_call_text``); ``prompt``/``completion``:
    the completion; ``text``: the whole text.
    """
    if "messages" in example:
        return [
            pair
            for m in example["messages"]
            if m.get("role") == "assistant"
            for pair in _assistant_holders(m)
        ]
    if "completion" in example:
        return [(example, example["completion"])]
    if "text" in example:
        return [(example, example["text"])]
    return []


def tag_example(example: dict, cfg: TagConfig = TagConfig()) -> dict:
    """A copy of ``example`` with spans added to every supervised text that has none.

    A text that already has a ``"gt"`` list (even an empty one: "annotated, nothing is GT") keeps
    it unless ``cfg.overwrite``. A tool call is tagged as the JSON object it renders as (keys and
    literal values structural, the tool name verification super-GT, see ``rules_struct``).
    """
    out = json.loads(json.dumps(example))  # deep copy, JSON types only
    for (holder, text), q in zip(supervised_texts(out), questions(out)):
        if "gt" in holder and not cfg.overwrite:
            continue
        holder["gt"] = tag_text(text, cfg, q)
    return out


def tag_examples(examples: List[dict], cfg: TagConfig = TagConfig()) -> List[dict]:
    return [tag_example(ex, cfg) for ex in examples]


def char_masks(example: dict) -> List[Tuple[str, List[int], List[int]]]:
    """(text, level per char, category index per char or -1) for every supervised text."""
    out = []
    for holder, text in supervised_texts(example):
        lvl = [0] * len(text)
        cat = [-1] * len(text)
        for sp in holder.get("gt") or []:
            c = CATEGORIES.index(sp["category"])
            for i in range(sp["start"], min(sp["end"], len(text))):
                if sp["level"] > lvl[i]:
                    lvl[i], cat[i] = sp["level"], c
        out.append((text, lvl, cat))
    return out


def score(pred: List[dict], gold: List[dict]) -> Dict[str, Dict[str, float]]:
    """Precision / recall / F1 of predicted spans against known ones, per category and overall.

    Definition (tokenizer-independent): the units are the non-whitespace characters of the
    supervised texts. For category c, a unit is predicted-c if a predicted span of category c
    covers it (the highest-level span when several do), gold-c likewise;
    P_c = |pred-c ∩ gold-c| / |pred-c|, R_c = |pred-c ∩ gold-c| / |gold-c|. The "any" row ignores
    categories (unit is GT or not), "super" compares level >= 2. Examples are paired by position.
    """
    if len(pred) != len(gold):
        raise ValueError(f"score: {len(pred)} predicted vs {len(gold)} gold examples")
    keys = list(CATEGORIES) + ["any", "super"]
    tp = dict.fromkeys(keys, 0)
    npred = dict.fromkeys(keys, 0)
    ngold = dict.fromkeys(keys, 0)
    for p_ex, g_ex in zip(pred, gold):
        for (text, pl, pc), (_, gl, gc) in zip(char_masks(p_ex), char_masks(g_ex)):
            for i, ch in enumerate(text):
                if ch.isspace():
                    continue
                for k, p, g in (
                    ("any", pl[i] > 0, gl[i] > 0),
                    ("super", pl[i] >= 2, gl[i] >= 2),
                ):
                    tp[k] += p and g
                    npred[k] += p
                    ngold[k] += g
                if pc[i] >= 0:
                    npred[CATEGORIES[pc[i]]] += 1
                if gc[i] >= 0:
                    ngold[CATEGORIES[gc[i]]] += 1
                if pc[i] >= 0 and pc[i] == gc[i]:
                    tp[CATEGORIES[pc[i]]] += 1
    out = {}
    for k in keys:
        p = tp[k] / npred[k] if npred[k] else 0.0
        r = tp[k] / ngold[k] if ngold[k] else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        out[k] = {"precision": p, "recall": r, "f1": f, "pred": npred[k], "gold": ngold[k]}
    return out


def strip_spans(examples: List[dict]) -> List[dict]:
    """Copies without any ``"gt"`` (to re-tag known data and score the tagger against it)."""
    out = json.loads(json.dumps(examples))
    for ex in out:
        for holder, _ in supervised_texts(ex):
            holder.pop("gt", None)
    return out
