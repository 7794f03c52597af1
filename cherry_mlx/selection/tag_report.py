"""``cherry-mlx tag`` as a library call: read, tag, measure, score, write, plot.

Statistics are measured where SGT uses them, on the token sequence the model sees: each example is
rendered with the tokenizer's chat template and encoded by ``cherry_mlx.data.encode`` (special
tokens included; a response token is GT when a span overlaps it). The GT ratio is GT tokens over
response tokens; category shares are over GT tokens. Without a tokenizer the same numbers are
given over the non-whitespace characters of the supervised texts, and the report says so.

When the input already carries spans (the bundled data, whose spans are known by construction),
the rules are also run on a span-free copy and scored against them (``tagger.score``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from cherry_mlx.data.categories import CATEGORIES
from cherry_mlx.data.encode import encode_example
from cherry_mlx.data.jsonl import read_jsonl
from cherry_mlx.selection.tagger import (
    TagConfig,
    char_masks,
    score,
    strip_spans,
    supervised_texts,
    tag_examples,
)

PAPER_RATIO = 0.153
PAPER_SHARES = dict(zip(CATEGORIES, (0.41, 0.23, 0.18, 0.08, 0.06, 0.04)))


@dataclass
class GTStats:
    """GT ratio and category shares of a data set, in ``units`` (tokens or characters)."""

    units: str
    examples: int = 0
    response: int = 0
    gt: int = 0
    levels: dict = field(default_factory=lambda: {1: 0, 2: 0, 3: 0})
    categories: dict = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    without_gt: int = 0  # examples with no GT unit (their SGT loss is L_full)

    @property
    def ratio(self) -> float:
        return self.gt / max(self.response, 1)

    def shares(self) -> dict:
        return {c: n / max(self.gt, 1) for c, n in self.categories.items()}

    def to_dict(self) -> dict:
        return {
            "units": self.units,
            "examples": self.examples,
            "response": self.response,
            "gt": self.gt,
            "ratio": self.ratio,
            "levels": self.levels,
            "shares": self.shares(),
            "examples_without_gt": self.without_gt,
        }


def char_stats(examples: List[dict]) -> GTStats:
    """GT statistics over non-whitespace characters of the supervised texts."""
    st = GTStats(units="characters (no tokenizer)")
    for ex in examples:
        st.examples += 1
        before = st.gt
        for text, lvl, cat in char_masks(ex):
            for ch, lv, c in zip(text, lvl, cat):
                if ch.isspace():
                    continue
                st.response += 1
                if lv > 0:
                    st.gt += 1
                    st.levels[lv] += 1
                    st.categories[CATEGORIES[c]] += 1
        st.without_gt += st.gt == before
    return st


def token_stats(examples: List[dict], tokenizer) -> GTStats:
    """GT statistics over the response tokens of the chat-template-rendered sequences."""

    st = GTStats(units="tokens (chat template applied)")
    for ex in examples:
        enc = encode_example(ex, tokenizer)
        resp = enc.response[1:]  # position 0 is never a target
        lev = enc.level[1:] * resp
        cat = enc.category[1:]
        st.examples += 1
        st.response += int(resp.sum())
        n_gt = int((lev > 0).sum())
        st.gt += n_gt
        st.without_gt += n_gt == 0
        for k in (1, 2, 3):
            st.levels[k] += int((lev == k).sum())
        for i, c in enumerate(CATEGORIES):
            st.categories[c] += int(((lev > 0) & (cat == i)).sum())
    return st


def has_spans(examples: List[dict]) -> bool:
    return any("gt" in h for ex in examples for h, _ in supervised_texts(ex))


@dataclass
class TagResult:
    examples: List[dict]
    stats: GTStats
    rule_stats: Optional[GTStats] = None  # rules alone on a span-free copy (when gold exists)
    scores: Optional[dict] = None  # rules vs known spans
    seconds: float = 0.0
    out_path: Optional[Path] = None
    plot_path: Optional[Path] = None


def tag_file(
    data: str | os.PathLike,
    out: Optional[str | os.PathLike] = None,
    cfg: TagConfig = TagConfig(),
    tokenizer=None,
    plot: bool = True,
    log=print,
) -> TagResult:
    """Tag ``data`` (JSONL), write ``out`` (JSONL) and return statistics (and scores vs known
    spans when the input has them)."""

    t0 = time.time()
    examples = read_jsonl(data)
    if not examples:
        raise ValueError(f"{data} has no examples (empty, or blank lines only): nothing to tag")
    tagged = tag_examples(examples, cfg)
    stats = token_stats(tagged, tokenizer) if tokenizer is not None else char_stats(tagged)
    res = TagResult(tagged, stats)
    if has_spans(examples):
        rules = tag_examples(strip_spans(examples), cfg)
        res.scores = score(rules, examples)
        res.rule_stats = (
            token_stats(rules, tokenizer) if tokenizer is not None else char_stats(rules)
        )
    res.seconds = time.time() - t0
    log(
        f"tagged {len(examples)} examples in {res.seconds:.1f}s "
        f"({len(examples) / max(res.seconds, 1e-9):.0f} examples/s)"
    )
    if out is not None:
        res.out_path = write_jsonl(out, tagged)
        log(f"wrote {res.out_path}")
        if plot:
            res.plot_path = plot_report(res, res.out_path.with_suffix(".png"))
            log(f"wrote {res.plot_path}")
    return res


def write_jsonl(path: str | os.PathLike, examples: List[dict]) -> Path:
    """Write atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(json.dumps(ex, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def format_stats(st: GTStats, title: str) -> str:
    lines = [
        f"{title}: {st.examples} examples, {st.response:,} response {st.units.split()[0]}, "
        f"GT {st.gt:,} = {100 * st.ratio:.1f}% (paper {100 * PAPER_RATIO:.1f}%), "
        f"levels GT/super/SSGT {st.levels[1]}/{st.levels[2]}/{st.levels[3]}, "
        f"examples without GT {st.without_gt}",
        f"  units: {st.units}",
        "  category        share   paper",
    ]
    for c, s in st.shares().items():
        lines.append(f"  {c:15s} {100 * s:5.1f}%  {100 * PAPER_SHARES[c]:5.1f}%")
    return "\n".join(lines)


def format_scores(scores: dict) -> str:
    lines = [
        "rules vs known spans (non-whitespace characters, see tagger.score):",
        "  category        precision  recall    F1    pred    gold",
    ]
    for k, r in scores.items():
        lines.append(
            f"  {k:15s} {r['precision']:9.3f} {r['recall']:7.3f} {r['f1']:6.3f} "
            f"{r['pred']:7d} {r['gold']:7d}"
        )
    return "\n".join(lines)


def format_result(res: TagResult) -> str:
    parts = [format_stats(res.stats, "output")]
    if res.rule_stats is not None:
        parts.append(format_stats(res.rule_stats, "rules alone (known spans removed)"))
    if res.scores is not None:
        parts.append(format_scores(res.scores))
    return "\n".join(parts)


def plot_report(res: TagResult, path: Path) -> Path:
    """Category shares vs the paper, and precision/recall per category when scored."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = 2 if res.scores is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4), squeeze=False)
    ax = axes[0][0]
    x = range(len(CATEGORIES))
    shares = res.stats.shares()
    ax.bar([i - 0.2 for i in x], [100 * shares[c] for c in CATEGORIES], 0.4, label="data")
    ax.bar([i + 0.2 for i in x], [100 * PAPER_SHARES[c] for c in CATEGORIES], 0.4, label="paper")
    ax.set_xticks(list(x), CATEGORIES, rotation=30, ha="right")
    ax.set_ylabel("% of GT " + res.stats.units.split()[0])
    ax.set_title(f"GT ratio {100 * res.stats.ratio:.1f}% (paper {100 * PAPER_RATIO:.1f}%)")
    ax.legend()
    if res.scores is not None:
        ax = axes[0][1]
        keys = list(res.scores)
        ax.bar(
            [i - 0.2 for i in range(len(keys))],
            [res.scores[k]["precision"] for k in keys],
            0.4,
            label="precision",
        )
        ax.bar(
            [i + 0.2 for i in range(len(keys))],
            [res.scores[k]["recall"] for k in keys],
            0.4,
            label="recall",
        )
        ax.set_xticks(range(len(keys)), keys, rotation=30, ha="right")
        ax.set_ylim(0, 1)
        ax.set_title("rules vs known spans")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
