"""Contrastive refinement over a tagged data set: score, report hit@k, promote, write spans back.

Each example is rendered with the model's chat template and tokenized with offsets
(``cherry_mlx.data.encode``), so candidates are the exact response tokens the model sees. The
known GT of a token (for hit@k) is its level after tagging: the given spans on the bundled data,
the rule spans elsewhere. Candidates are response tokens that are not special tokens and have at
least one later token (d_t is measured downstream, see ``refine.py``). Replacements are drawn
from the response tokens of the refined examples (plausible in-distribution tokens).

By default (``words``) candidates are word-initial tokens and are replaced by word-initial tokens:
replacing a piece inside a word ("P|ar|is" -> "P|xy|is") makes a non-word, and the model's
surprise at a broken word then outranks every real decision. A GT word is hit when its first
token is ranked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from cherry_mlx.data.encode import _special_ids, encode_rendered, hf_tokenizer, render_example
from cherry_mlx.selection import refine as R
from cherry_mlx.selection.tag_report import write_jsonl
from cherry_mlx.selection.tagger import merge_spans, supervised_texts


@dataclass
class RefineResult:
    summary: dict
    per_example: List[dict] = field(default_factory=list)
    promoted_spans: int = 0  # promoted candidates (word-initial tokens by default)
    examples: Optional[list] = None


def _encode(ex: dict, tokenizer):
    tok = hf_tokenizer(tokenizer)
    rendered = render_example(ex, tok)
    enc = tok(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offs = enc["input_ids"], np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    return rendered, encode_rendered(rendered, tok, ids, offs), offs, tok


def word_starts(text: str, offs: np.ndarray, ids, specials: set) -> np.ndarray:
    """Bool per token: the token begins a word (after whitespace, a special token or the start)."""
    out = np.zeros(len(offs), dtype=bool)
    for p, (a, b) in enumerate(offs):
        piece = text[a:b]
        if not piece.strip() or int(ids[p]) in specials:
            continue
        prev_special = p > 0 and int(ids[p - 1]) in specials
        out[p] = piece[0].isspace() or a == 0 or text[a - 1].isspace() or prev_special
    return out


def _content_starts(ex: dict, text: str) -> list:
    """(holder, supervised text, start in the rendered text) of each supervised text, in order
    (assistant contents and tool calls, see ``tagger.supervised_texts``)."""
    out, cursor = [], 0
    for holder, content in supervised_texts(ex):
        at = text.find(content, cursor) if content else -1
        if at >= 0:
            out.append((holder, content, at))
            cursor = at + len(content)
    return out


def _promote_spans(ex: dict, text: str, offs: np.ndarray, positions: np.ndarray) -> int:
    """Add level-1 "reasoning" spans for promoted tokens; returns how many were added."""
    added = 0
    starts = _content_starts(ex, text)
    for p in positions:
        a, b = int(offs[p, 0]), int(offs[p, 1])
        for holder, content, at in starts:
            if at <= a < at + len(content):
                s, e = a - at, min(b, at + len(content)) - at
                while s < e and content[s].isspace():
                    s += 1
                if e > s:
                    raw = [
                        (x["start"], x["end"], x["level"], x["category"])
                        for x in holder.get("gt") or []
                    ]
                    holder["gt"] = merge_spans(content, raw + [(s, e, 1, "reasoning")])
                    added += 1
                break
    return added


def _whole_words(positions: np.ndarray, starts: np.ndarray, n: int) -> np.ndarray:
    """A promoted word-initial token promotes the rest of its word too."""
    out = []
    for p in positions:
        out.append(p)
        q = p + 1
        while q < n and not starts[q] and q < len(starts):
            out.append(q)
            q += 1
    return np.asarray(out, dtype=np.int64)


def refine_examples(model, tokenizer, examples: list, cfg: R.RefineConfig, log=print):
    """Score up to ``cfg.max_examples`` examples; promote above tau in place; hit@k summary."""

    layer = R.resolve_layer(model, cfg.layer)
    max_len = int(getattr(model.args, "max_position_embeddings", 0) or 0) or None
    rng = np.random.default_rng(cfg.seed)
    chosen = examples[: cfg.max_examples]
    encoded = [_encode(ex, tokenizer) for ex in chosen]
    specials = _special_ids(encoded[0][3]) if encoded else set()
    starts = [
        word_starts(r.text, o, e.tokens, specials) if cfg.words else np.ones(len(e), bool)
        for r, e, o, _ in encoded
    ]
    pool = {
        int(t)
        for (_, e, _, _), w in zip(encoded, starts)
        for t, r, s in zip(e.tokens, e.response, w)
        if r and s
    }
    pool -= specials
    per, promoted, candidates, t0, ntok = [], 0, 0, time.time(), 0
    for i, (ex, (rendered, enc, offs, _), ws) in enumerate(zip(chosen, encoded, starts)):
        toks = enc.tokens[:max_len] if max_len else enc.tokens
        n = len(toks)
        pos = np.array(
            [
                p
                for p in range(1, n - 1)
                if enc.response[p] and ws[p] and int(toks[p]) not in specials
            ],
            dtype=np.int64,
        )
        if len(pos) < 2:
            continue
        gold = enc.level[pos] > 0
        reps = R.draw_replacements(toks[pos], sorted(pool), cfg.k, rng)
        scores = R.contrastive_scores(model, toks, pos, reps, layer, cfg.batch_size, cfg.window)
        ntok += len(pos) * cfg.k * n
        if gold.any():
            per.append(R.hit_at(scores, gold, cfg.top))
        up = R.promote(scores, cfg.tau) & ~gold
        _promote_spans(ex, rendered.text, offs, _whole_words(pos[up], ws, n))
        promoted += int(up.sum())
        candidates += len(pos)
        if (i + 1) % 8 == 0:
            dt = time.time() - t0
            log(f"refine {i + 1}/{len(chosen)} examples, {ntok / dt:.0f} tokens/s")
    summary = R.summarise(per)
    summary.update(
        layer=layer,
        tau=cfg.tau,
        k=cfg.k,
        promoted=promoted,
        candidates=candidates,
        seconds=round(time.time() - t0, 1),
    )
    return RefineResult(summary, per, promoted, examples)


def refine_file(res, model, tokenizer, cfg: R.RefineConfig, out=None, log=print) -> RefineResult:
    """``cherry-mlx tag --refine MODEL``: refine the tagged examples of a ``TagResult`` with a
    loaded model (the caller loads it: selection does not know how models are stored)."""
    rres = refine_examples(model, tokenizer, res.examples, cfg, log=log)
    if out is not None:
        write_jsonl(out, res.examples)
        log(f"wrote {out} (with {rres.promoted_spans} promoted candidates)")
    return rres


def format_refine(rres: RefineResult) -> str:
    s = rres.summary
    if not s.get("examples"):
        return "refinement: no example with known GT among the refined ones"
    return (
        f"contrastive refinement at layer {s['layer']} (tau {s['tau']}, k {s['k']}): "
        f"{s['examples']} examples, hit@5 {s['hit']:.3f} (random ranking {s['random_hit']:.3f}), "
        f"precision@5 {s['precision']:.3f} (random {s['random_precision']:.3f}), "
        f"promoted {s['promoted']} of {s['candidates']} candidates, {s['seconds']}s"
    )
