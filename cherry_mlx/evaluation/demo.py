"""After training: does the model answer the bundled factual questions better than chance?

Items come from the data's factual QA records: the prompt is the conversation up to the final
assistant turn, the gold answer is that turn's super-GT (level 2) factual span, and the
*reference prefix* is the assistant text before the answer ("The capital of Chile is "). Three
measurements, each also taken on a randomly initialised model of the same shape (the baseline):

    ranking accuracy    the gold answer has the highest log-likelihood after the prefix among K
                        candidates (gold + K-1 answers of other questions of the same group and
                        language); chance = 1/K
    answer token acc.   teacher-forced top-1 accuracy on the answer's tokens after the prefix
                        (chance ~1/vocab): did the model learn what kind of token comes there
    cloze exact match   greedy continuation of prompt + reference prefix starts with the answer
    free exact match    greedy response to the bare prompt contains the answer
                        (both greedy measures on the first N_GREEDY items only: decoding is slow)

Two item sets: facts asked in the training split ("seen": recall of trained facts, the claim a
from-scratch tiny model can support) and the held-out test split ("unseen": subjects never seen in
training; near chance is the honest expectation). Results go to ``demo.json`` in the run dir.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Dict, List, Optional

import mlx.core as mx
import numpy as np

from cherry_mlx.decoding.generate import SamplingConfig, generate_tokens
from cherry_mlx.models.loading import build_model, model_config

K_CANDIDATES = 4
MAX_NEW = 24
N_GREEDY = 8  # greedy decoding is the slow part: a few items are enough to show the answers


def qa_items(records: List[dict], limit: int = 40, seed: int = 0) -> List[dict]:
    """Factual QA items (prompt messages, reference prefix, gold answer, group, language)."""
    items = []
    for rec in records:
        rid = str(rec.get("id", ""))
        msgs = rec.get("messages") or []
        if not rid.startswith("factual") or len(msgs) < 2 or msgs[-1].get("role") != "assistant":
            continue
        spans = [
            s
            for s in msgs[-1].get("gt", [])
            if s.get("level") == 2 and s.get("category") == "factual"
        ]
        if not spans:
            continue
        s = spans[0]
        content = msgs[-1]["content"]
        parts = rid.split(":")
        items.append(
            {
                "prompt": msgs[:-1],
                "prefix": content[: s["start"]],
                "gold": content[s["start"] : s["end"]],
                "group": parts[1].split(".")[0] if len(parts) > 1 else "",
                "lang": parts[2] if len(parts) > 2 else "",
                "question": next(
                    (m["content"] for m in reversed(msgs[:-1]) if m["role"] == "user"), ""
                ),
            }
        )
    rng = random.Random(seed)
    rng.shuffle(items)
    # one item per distinct question text keeps the set varied
    seen, out = set(), []
    for it in items:
        if it["question"] not in seen:
            seen.add(it["question"])
            out.append(it)
    return out[:limit]


def _candidates(item: dict, pool: List[dict], rng: random.Random) -> List[str]:
    others = sorted(
        {
            p["gold"]
            for p in pool
            if p["group"] == item["group"]
            and p["lang"] == item["lang"]
            and p["gold"] != item["gold"]
        }
    )
    if len(others) < K_CANDIDATES - 1:
        others = sorted({p["gold"] for p in pool if p["gold"] != item["gold"]})
    return [item["gold"]] + rng.sample(others, min(K_CANDIDATES - 1, len(others)))


def _prompt_ids(tokenizer, messages) -> List[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) else ids)


def _logprob(model, context: List[int], cont: List[int]):
    """(sum of log p(cont | context), number of cont tokens that are the top-1 prediction)."""
    seq = mx.array([context + cont])
    logits = model(seq[:, :-1])[0, len(context) - 1 :].astype(mx.float32)  # (len(cont), V)
    lp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    target = mx.array(cont)
    total = mx.take_along_axis(lp, target[:, None], axis=1).sum()
    hits = (mx.argmax(logits, axis=-1) == target).sum()
    return float(total.item()), int(hits.item())


def greedy(model, ids: List[int], max_new: int, stop: set) -> List[int]:
    """Greedy continuation of ``ids`` (the serving code's decoder), without the stop token."""
    out = []
    for tok in generate_tokens(model, ids, SamplingConfig(), max_tokens=max_new, stop=stop):
        if tok in stop:
            break
        out.append(tok)
    return out


def _norm(s: str) -> str:
    return "".join(s.lower().split())


def _found(text: str, gold: str, at_start: bool = False) -> bool:
    """``gold`` in ``text`` (case and spaces ignored), not as a piece of a longer number:
    "29" does not match inside "1999922"."""
    text, gold = _norm(text), _norm(gold)
    pat = ("^" if at_start else r"(?<!\d)") + re.escape(gold) + r"(?!\d)"
    return re.search(pat, text) is not None


def score_items(
    model, tokenizer, items: List[dict], pool: List[dict], seed: int = 0, n_greedy: int = N_GREEDY
) -> Dict:
    """Ranking and answer-token accuracy on every item; greedy answers on the first few."""
    rng = random.Random(seed)
    stop = set(getattr(tokenizer, "eos_token_ids", None) or [tokenizer.eos_token_id])
    cloze = free = ranked = hits = n_tok = 0
    examples = []
    for i, it in enumerate(items):
        ctx = _prompt_ids(tokenizer, it["prompt"])
        pre = tokenizer.encode(it["prefix"], add_special_tokens=False) if it["prefix"] else []
        cands = [tokenizer.encode(c, add_special_tokens=False) for c in _candidates(it, pool, rng)]
        scored = [_logprob(model, ctx + pre, c) for c in cands]
        ranked += int(np.argmax([lp for lp, _ in scored]) == 0)
        hits, n_tok = hits + scored[0][1], n_tok + len(cands[0])
        if i < n_greedy:
            cont = tokenizer.decode(greedy(model, ctx + pre, 12, stop))
            ok_cloze = _found(cont, it["gold"], at_start=True)
            answer = tokenizer.decode(greedy(model, ctx, MAX_NEW, stop))
            ok_free = _found(answer, it["gold"])
            cloze, free = cloze + ok_cloze, free + ok_free
            examples.append(
                {
                    "question": it["question"],
                    "gold": it["gold"],
                    "answer": answer,
                    "cloze": cont,
                    "match": bool(ok_cloze),
                    "free_match": bool(ok_free),
                }
            )
    n, g = max(len(items), 1), max(min(n_greedy, len(items)), 1)
    return {
        "n": len(items),
        "n_greedy": min(n_greedy, len(items)),
        "cloze_exact_match": cloze / g,
        "free_exact_match": free / g,
        "rank_accuracy": ranked / n,
        "rank_chance": 1.0 / K_CANDIDATES,
        "answer_token_accuracy": hits / max(n_tok, 1),
        "examples": examples,
    }


def run_demo(
    model,
    tokenizer,
    test_records,
    run_dir: Path,
    seed: int = 0,
    train_records: Optional[List[dict]] = None,
    limit: int = 80,
) -> Optional[Dict]:
    """Score the trained model and a random-init baseline; write ``demo.json``; return a summary."""

    sets = {"unseen": qa_items(test_records or [], limit, seed)}
    if train_records:
        sets = {"seen": qa_items(train_records, limit, seed), **sets}
    sets = {k: v for k, v in sets.items() if v}
    if not sets:
        return None
    mx.random.seed(seed + 12345)
    baseline = build_model(model_config(model))
    mx.eval(baseline.parameters())
    model.eval()
    out: Dict = {}
    for name, items in sets.items():
        pool = items
        out[name] = {
            "model": score_items(model, tokenizer, items, pool, seed),
            "random_init": score_items(baseline, tokenizer, items, pool, seed),
        }
    (Path(run_dir) / "demo.json").write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    key = "seen" if "seen" in out else "unseen"
    m = out[key]["model"]
    keys = ("cloze_exact_match", "free_exact_match", "rank_accuracy", "answer_token_accuracy")
    return {
        "set": key,
        "n": m["n"],
        "n_greedy": m["n_greedy"],
        "rank_chance": m["rank_chance"],
        "sets": {
            k: {w: {x: v[w][x] for x in keys} for w in ("model", "random_init")}
            for k, v in out.items()
        },
        "examples": [{**e, "answer": e["cloze"]} for e in m["examples"]],
    }


class Demo:
    """Trainer callback: once a run finishes (not when stopped early), score held-out factual
    questions greedily against a random-init baseline and put the summary on the result."""

    def __init__(self, log=print):
        self.log = log

    def on_train_end(self, result) -> None:
        examples = result.examples or {}
        if result.stopped_early or not examples.get("test") or result.tokenizer is None:
            return
        self.log("scoring held-out questions (demo) ...")
        seed = result.config.seed if result.config is not None else 0
        result.demo = run_demo(
            result.model, result.tokenizer, examples["test"], result.run_dir, seed,
            train_records=examples.get("train"),
        )  # fmt: skip
