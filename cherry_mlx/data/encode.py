"""Chat-template-aware encoding: one example -> the exact token sequence the model sees, with masks.

Paper §3.2.2 step 1: GT identification and supervision operate on the tokens the model meets at
inference, special tokens included. So an example is rendered to one string with the tokenizer's
own chat template, that string is tokenized once with an offsets mapping, and character ranges
(assistant turns, GT spans) become per-token arrays by overlap. Nothing here knows our template:
any Hugging Face fast tokenizer with a chat template works as it is.

Where each assistant turn lies in the rendered string is found the way mlx-lm masks prompts: the
turn is what rendering ``messages[:i+1]`` adds to rendering ``messages[:i]`` with the generation
prompt (the assistant header), trailing whitespace dropped. So the turn's reasoning, content, tool
calls and its end-of-turn token are response; the header and everything else are context. Templates
that rewrite history (e.g. drop old reasoning) fail that prefix check; then the assistant content
and tool calls are searched for in the rendered string and the special token right after the last
of them (end of turn, or the template's end-of-call marker) is added.
GT spans are offsets into the message ``content`` or into a tool call's canonical text
(``jsonl.tool_call_text``: what a template renders between its tool-call markers, e.g.
``<|spartan_tool|>{"name": ..., "arguments": {...}}<|spartan_tool_end|>``); within the turn the
content is searched for first, then each call in order after it, and every piece's spans are
shifted to wherever it landed. A piece the template renders differently is not found: its spans
count as unmapped (``EncodeStats.spans_unmapped``), never silently misplaced.

Per-token arrays (length n, aligned with ``tokens``; batching shifts them onto targets):
    response  token is part of an assistant turn (all of them, not only the last), its
              end-of-turn token, a completion, or any token of a ``text`` example
    level     max GT level of the spans overlapping the token (0 = non-GT)
    category  CATEGORIES index of the highest-level overlapping span (first wins ties), -1 if none
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from cherry_mlx.data.categories import CATEGORIES
from cherry_mlx.data.jsonl import assistant_pieces


@dataclass
class Encoded:
    """One encoded example: per-token arrays of equal length n."""

    tokens: np.ndarray  # (n,) int32
    response: np.ndarray  # (n,) bool
    level: np.ndarray  # (n,) int8
    category: np.ndarray  # (n,) int8, -1 = none
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class EncodeStats:
    """What ``encode_dataset`` did: nothing is dropped or cut without a count here."""

    examples: int = 0
    kept: int = 0
    truncated: int = 0
    dropped_too_long: int = 0  # on_overflow="drop"
    dropped_no_response: int = 0  # nothing left to supervise (e.g. truncated inside the prompt)
    tokens: int = 0
    response_tokens: int = 0
    gt_tokens: int = 0  # response tokens with level >= 1
    level_tokens: dict = field(default_factory=lambda: {1: 0, 2: 0, 3: 0})  # level == k
    category_tokens: dict = field(default_factory=lambda: {c: 0 for c in CATEGORIES})
    spans: int = 0
    spans_unmapped: int = 0  # content not found in the rendered text, or cut by truncation
    turns_unlocated: int = 0  # assistant turns that could not be found in the rendered text

    @property
    def gt_ratio(self) -> float:
        return self.gt_tokens / max(self.response_tokens, 1)

    def summary(self) -> str:
        cats = ", ".join(
            f"{c} {100 * n / max(self.gt_tokens, 1):.0f}%" for c, n in self.category_tokens.items()
        )
        lines = [
            f"{self.kept}/{self.examples} examples, {self.tokens:,} tokens, "
            f"{self.response_tokens:,} response, GT {self.gt_tokens:,} "
            f"({100 * self.gt_ratio:.1f}% of response)",
            f"truncated {self.truncated}, dropped: too long {self.dropped_too_long}, "
            f"no response {self.dropped_no_response}",
            f"GT categories: {cats}",
        ]
        if self.spans_unmapped or self.turns_unlocated:
            lines.append(
                f"WARNING: {self.spans_unmapped}/{self.spans} GT spans unmapped, "
                f"{self.turns_unlocated} assistant turns not located"
            )
        return "\n".join(lines)


def hf_tokenizer(tokenizer):
    """The Hugging Face tokenizer inside an mlx-lm ``TokenizerWrapper`` (or the tokenizer)."""
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    tok = tokenizer._tokenizer if isinstance(tokenizer, TokenizerWrapper) else tokenizer
    if getattr(tok, "is_fast", True) is False:
        raise ValueError(
            f"tokenizer {getattr(tok, 'name_or_path', '')!r} is a slow (Python) "
            "tokenizer without offsets mapping; use a fast one (tokenizer.json)"
        )
    return tok


@dataclass
class Rendered:
    """An example as text, with character ranges to supervise and GT spans (absolute offsets)."""

    text: str
    response: list  # [(start, end, extend_to_next_special)]
    spans: list  # [(start, end, level, category_index)]
    spans_unmapped: int = 0
    turns_unlocated: int = 0


def _render(tok, messages, tools, generation_prompt: bool) -> str:
    kw = {"tools": tools} if tools else {}
    return tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=generation_prompt, **kw
    )


def _shift_spans(gt, offset: int) -> list:
    return [
        (s["start"] + offset, s["end"] + offset, s["level"], CATEGORIES.index(s["category"]))
        for s in gt or []
    ]


def _render_plain(tok, prompt: str, completion: str, gt) -> Rendered:
    bos, eos = tok.bos_token or "", tok.eos_token or ""
    text = bos + prompt + completion + eos
    start = len(bos) + len(prompt)
    return Rendered(text, [(start, len(text), False)], _shift_spans(gt, start))


def _find_in_order(full: str, pieces: list, lo: int, hi: int) -> list:
    """Start of each piece text in ``full[lo:hi]``, each after the previous one found (-1: not
    found)."""
    out = []
    for text, _ in pieces:
        at = full.find(text, lo, hi) if text else -1
        out.append(at)
        if at >= 0:
            lo = at + len(text)
    return out


def _render_chat(tok, messages: list, tools) -> Rendered:
    full = _render(tok, messages, tools, False)
    out = Rendered(full, [], [])
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        pieces = assistant_pieces(m)  # [(content or call text, gt)], in rendering order
        n_spans = sum(len(gt or []) for _, gt in pieces)
        try:
            pre = _render(tok, messages[:i], tools, True)
            turn = _render(tok, messages[: i + 1], tools, False)
        except Exception:  # some templates reject a prefix (e.g. must start with a user turn)
            pre = turn = None
        consistent = pre is not None and turn.startswith(pre) and full.startswith(turn)
        if consistent and len(pre) >= cursor:
            start, end, extend = len(pre), len(turn.rstrip()), False
            found = _find_in_order(full, pieces, start, end)
        else:
            found = _find_in_order(full, pieces, cursor, len(full))
            hits = [(at, at + len(t)) for at, (t, _) in zip(found, pieces) if at >= 0]
            if not hits:
                out.turns_unlocated += 1
                out.spans_unmapped += n_spans
                continue
            start, end, extend = hits[0][0], hits[-1][1], True
        out.response.append((start, end, extend))
        for at, (_, gt) in zip(found, pieces):
            if not gt:
                continue
            if at < 0:
                out.spans_unmapped += len(gt)
            else:
                out.spans += _shift_spans(gt, at)
        cursor = end
    return out


def render_example(example: dict, tokenizer) -> Rendered:
    """Render a validated example (``data.jsonl`` shapes) with the tokenizer's template."""
    tok = hf_tokenizer(tokenizer)
    if "text" in example:
        bos, eos = tok.bos_token or "", tok.eos_token or ""
        text = bos + example["text"] + eos
        return Rendered(
            text, [(len(bos), len(text), False)], _shift_spans(example.get("gt"), len(bos))
        )
    if "prompt" in example:
        if not getattr(tok, "chat_template", None):
            return _render_plain(tok, example["prompt"], example["completion"], example.get("gt"))
        messages = [
            {"role": "user", "content": example["prompt"]},
            {"role": "assistant", "content": example["completion"], "gt": example.get("gt")},
        ]
        return _render_chat(tok, messages, None)
    if not getattr(tok, "chat_template", None):
        raise ValueError(
            f"tokenizer {getattr(tok, 'name_or_path', tok)!r} has no chat template; "
            "use prompt/completion or text data, or a tokenizer with a template"
        )
    return _render_chat(tok, example["messages"], example.get("tools"))


def _special_ids(tok) -> set:
    ids = set(getattr(tok, "all_special_ids", []) or [])
    decoder = getattr(tok, "added_tokens_decoder", None) or {}
    ids |= {i for i, t in decoder.items() if getattr(t, "special", False)}
    return ids


def masks_from_offsets(
    offsets: np.ndarray, rendered: Rendered, token_ids: np.ndarray, special_ids: set
):
    """Per-token (response, level, category) from character ranges. offsets: (n, 2)"""
    n = len(offsets)
    a, b = offsets[:, 0], offsets[:, 1]
    b = np.maximum(b, a + 1)  # a zero-width token counts as the character at its start
    response = np.zeros(n, dtype=bool)
    for start, end, extend in rendered.response:
        inside = (a < end) & (b > start)
        response |= inside
        if extend and inside.any():
            nxt = int(np.nonzero(inside)[0][-1]) + 1
            if nxt < n and int(token_ids[nxt]) in special_ids:
                response[nxt] = True
    level = np.zeros(n, dtype=np.int8)
    category = np.full(n, -1, dtype=np.int8)
    for start, end, lev, cat in sorted(rendered.spans, key=lambda s: s[2]):  # stable by level
        hit = (a < end) & (b > start) & (lev > level) & response
        level[hit] = lev
        category[hit] = cat
    return response, level, category


def encode_rendered(rendered: Rendered, tokenizer, ids=None, offsets=None) -> Encoded:
    """Tokenize a rendered example (or use given ids/offsets) and build its per-token arrays."""
    tok = hf_tokenizer(tokenizer)
    if ids is None:
        enc = tok(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
    ids = np.asarray(ids, dtype=np.int32)
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    response, level, category = masks_from_offsets(offsets, rendered, ids, _special_ids(tok))
    return Encoded(ids, response, level, category)


def encode_example(example: dict, tokenizer) -> Encoded:
    """The exact token sequence of one example and its masks (see the module docstring)."""
    return encode_rendered(render_example(example, tokenizer), tokenizer)


def encode_dataset(
    examples: Sequence[dict],
    tokenizer,
    max_len: int,
    on_overflow: str = "truncate",
    verbose: bool = False,
) -> tuple[list[Encoded], EncodeStats]:
    """Encode examples for a context of ``max_len`` (batches then have T <= max_len).

    An example keeps at most ``max_len + 1`` tokens (inputs are tokens[:-1], targets tokens[1:]).
    Longer ones are cut (``on_overflow="truncate"``) or dropped (``"drop"``); examples left with no
    supervised target are dropped. Every case is counted in the returned stats."""
    if on_overflow not in ("truncate", "drop"):
        raise ValueError(f"on_overflow={on_overflow!r}; use 'truncate' or 'drop'")
    if max_len < 1:
        raise ValueError(f"max_len={max_len}; use the model's context length (>= 1)")
    tok = hf_tokenizer(tokenizer)
    stats = EncodeStats(examples=len(examples))
    rendered = [render_example(ex, tok) for ex in examples]
    # one batched call: the Rust tokenizer parallelises it
    enc = tok([r.text for r in rendered], add_special_tokens=False, return_offsets_mapping=True)
    specials = _special_ids(tok)
    out = []
    limit = max_len + 1
    for r, ids, offs in zip(rendered, enc["input_ids"], enc["offset_mapping"]):
        ids = np.asarray(ids, dtype=np.int32)
        offs = np.asarray(offs, dtype=np.int64).reshape(-1, 2)
        e = Encoded(ids, *masks_from_offsets(offs, r, ids, specials))
        stats.spans += len(r.spans) + r.spans_unmapped
        stats.spans_unmapped += r.spans_unmapped
        stats.turns_unlocated += r.turns_unlocated
        if len(e) > limit:
            if on_overflow == "drop":
                stats.dropped_too_long += 1
                continue
            cut = offs[limit - 1, 1] if limit <= len(offs) else 0
            stats.spans_unmapped += sum(1 for s in r.spans if s[1] > cut)
            e = Encoded(
                ids[:limit], e.response[:limit], e.level[:limit], e.category[:limit], truncated=True
            )
            stats.truncated += 1
        if not e.response[1:].any():
            stats.dropped_no_response += 1
            continue
        out.append(e)
        resp = e.response[1:]  # position 0 is never a target
        lev = np.where(resp, e.level[1:], 0)
        stats.kept += 1
        stats.tokens += len(e)
        stats.response_tokens += int(resp.sum())
        stats.gt_tokens += int((lev > 0).sum())
        for k in (1, 2, 3):
            stats.level_tokens[k] += int((lev == k).sum())
        cats = e.category[1:][lev > 0]
        for ci, c in enumerate(CATEGORIES):
            stats.category_tokens[c] += int((cats == ci).sum())
    if verbose:
        print(stats.summary(), file=sys.stderr)
    return out, stats


def describe_tokens(enc: Encoded, tokenizer, start: int = 0, stop: Optional[int] = None) -> str:
    """Readable table of tokens and masks (debugging and the docs): piece, R, level, category."""
    tok = hf_tokenizer(tokenizer)
    pieces: list[Any] = tok.convert_ids_to_tokens([int(t) for t in enc.tokens[start:stop]])
    rows = []
    for i, p in enumerate(pieces, start):
        cat = CATEGORIES[enc.category[i]] if enc.category[i] >= 0 else ""
        rows.append(f"{i:5d} {p!r:24} {'R' if enc.response[i] else '.'} {enc.level[i]} {cat}")
    return "\n".join(rows)
