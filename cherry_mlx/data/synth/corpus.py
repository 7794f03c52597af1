"""Real, not-written-here prose for language modelling and the shuffled-text control.

- Korean: the Constitution of the Republic of Korea, vendored from the konlpy 0.6.0 wheel
  (``cherry_mlx/data/corpora/ko_constitution.txt``; statute text, unprotected under art. 7 of the
  Korean Copyright Act; see ``corpora/PROVENANCE.md``).
- English: the prose of CPython's own ``pydoc_data.topics`` (the language reference behind
  ``help()``), read at build time from the running interpreter's standard library, so nothing is
  vendored or downloaded. Its content follows the Python version, so the English files are
  byte-identical only between builds on the same Python.

Both are cut into ``{"text": ...}`` chunks at paragraph or sentence boundaries, short enough for
the tiny preset's context.
"""

from __future__ import annotations

import os
import re

CORPORA_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "corpora")
KO_CONSTITUTION = os.path.join(CORPORA_DIR, "ko_constitution.txt")


def _chunks(paragraphs, max_chars: int) -> list[str]:
    """Greedy packing of paragraphs (split at sentence ends when one is too long)."""
    pieces = []
    for p in paragraphs:
        if len(p) <= max_chars:
            pieces.append(p)
            continue
        for s in re.split(r"(?<=[.!?다])\s+", p):
            while len(s) > max_chars:  # a run-on sentence: cut at a space
                cut = s.rfind(" ", 0, max_chars)
                cut = cut if cut > 0 else max_chars
                pieces.append(s[:cut])
                s = s[cut:].lstrip()
            if s:
                pieces.append(s)
    out, cur = [], ""
    for p in pieces:
        if len(cur) >= 40 and len(cur) + 1 + len(p) > max_chars:  # no title-only chunks
            out.append(cur)
            cur = p
        else:
            cur = f"{cur}\n{p}" if cur else p
    if cur:
        out.append(cur)
    return out


def korean_paragraphs() -> list[str]:
    if not os.path.exists(KO_CONSTITUTION):
        raise FileNotFoundError(
            f"{KO_CONSTITUTION} is missing: reinstall cherry-mlx (the file ships with the package)"
        )
    with open(KO_CONSTITUTION, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def english_paragraphs() -> list[str]:
    """Running prose of ``pydoc_data.topics``: headings, grammar and code blocks dropped."""
    from pydoc_data.topics import topics

    paras = []
    for key in sorted(topics):
        block: list[str] = []
        for line in topics[key].splitlines() + [""]:
            code_or_rule = line.startswith("   ") or set(line.strip()) <= set("*=-~^")
            if not line.strip() or code_or_rule:
                text = " ".join(block)
                if len(text) > 80 and text.endswith((".", ":")) and ">>>" not in text:
                    paras.append(text)
                block = []
            else:
                block.append(line.strip())
    return paras


def prose_records(lang: str, max_chars: int) -> tuple[list[dict], list[dict]]:
    """(train, valid) ``{"text"}`` records; every tenth chunk is held out."""
    paras = korean_paragraphs() if lang == "ko" else english_paragraphs()
    chunks = _chunks(paras, max_chars)
    train = [{"text": c} for i, c in enumerate(chunks) if i % 10 != 9]
    valid = [{"text": c} for i, c in enumerate(chunks) if i % 10 == 9]
    return train, valid
