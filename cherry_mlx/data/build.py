"""``cherry-mlx data build``: the bundled, deterministic default data set and prose corpora.

Writes, under ``out_dir`` (default ``weights/data``):
    default/{train,valid,test}.jsonl   ``messages`` records (optional ``tools``) whose assistant
                                       turns carry GT char spans known by construction
    default/ssgt_prompts.jsonl         held-out prompts for the SSGT rate metrics
    default/summary.json               counts, GT share and category shares
    prose/{ko,en}.jsonl, prose/{ko,en}.valid.jsonl    ``{"text"}`` chunks of real prose

Determinism: every family draws from its own ``random.Random(f"{seed}:{family}")`` (string seeds
are hashed with SHA-512, independent of PYTHONHASHSEED), records are written in a seeded order
with fixed JSON formatting, so two builds with the same seed and scale are byte-identical.

Splits are made by *question identity* (``qid``: the subject of a fact, the numbers of a
problem, the harmful request and its framing), never by example, so no question of valid/test
appears in train in any phrasing, language or family. Within each group of qids (countries,
elements, shopping problems, ...) the qids are ordered by a seeded hash and the first ~5% go to
test, the next ~5% to valid, which keeps every family represented in every split.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from dataclasses import MISSING, dataclass

from cherry_mlx._settings import setting
from cherry_mlx.data.paths import DATA_ROOT, WEIGHTS_ROOT
from cherry_mlx.data.synth import factual, moments, reasoning, tools
from cherry_mlx.data.synth.corpus import prose_records
from cherry_mlx.data.synth.spans import qid_of
from cherry_mlx.data.synth.ssgt import ssgt_prompts
from cherry_mlx.data.synth.stats import family_counts, format_stats, gt_stats, load_hf_tokenizer

# (family, generator, examples at scale 1). Shares chosen so GT categories come out near the
# paper's 41/23/18/8/6/4% and the GT share of response tokens near its 15.3%.
FAMILIES = [
    ("factual", factual.gen_factual, 1800),
    ("json", factual.gen_json, 900),
    ("multiturn", factual.gen_multiturn, 450),
    ("arithmetic", lambda rng, n: reasoning.gen_math(rng, n), 800),
    ("unit", lambda rng, n: reasoning.gen_math(rng, n, reasoning.UNIT, "unit"), 450),
    ("tools", tools.gen_tools, 620),
    ("atcha", moments.gen_atcha, 500),
    ("jamkkan", moments.gen_jamkkan, 260),
    ("guardrail", moments.gen_guardrail, 450),
]
# every name the build writes (the output policy's --force replaces only these)
OUTPUT_NAMES = frozenset(
    {"default", "prose", "summary.json", "ssgt_prompts.jsonl"}
    | {f"{s}.jsonl" for s in ("train", "valid", "test")}
    | {f"{lang}{v}.jsonl" for lang in ("ko", "en") for v in ("", ".valid")}
)
HOLDOUT = 0.05  # share of each qid group in test, and again in valid


@dataclass
class BuildConfig:
    """Generate KO/EN instruction data with GT spans known by construction, split by question."""

    out_dir: str = setting(
        MISSING, "Output folder (default: $CHERRY_MLX_WEIGHTS/data, else weights/data).",
        flag="--out", short="-o", default_factory=lambda: DATA_ROOT,
    )  # fmt: skip
    seed: int = setting(0, "Seed of every random choice (same seed -> same bytes).", at_least=0)
    scale: float = setting(1.0, "Multiplies every family's example count (small values for tests).")
    prose: bool = setting(True, "Also write the Korean/English prose corpora (prose/*.jsonl).")
    force: bool = setting(False, "Write into a non-empty folder, replacing only the data files.")
    ko_chunk_chars: int = 280  # ~1.2 chars per token in Korean: fits a 256-token context
    en_chunk_chars: int = 500  # ~2.5 chars per token in English (a 4k vocabulary)
    tokenizer: str | None = setting(
        None, "tokenizer.json for the GT share in tokens (default: cherry-tiny's)."
    )
    token_stats: bool = True  # measure the GT share in tokens when a tokenizer.json exists

    def __post_init__(self):
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"--scale {self.scale} must be a positive number (e.g. 0.05 or 1)")
        if self.seed < 0:
            raise ValueError(f"--seed {self.seed} must be 0 or more")
        for name in ("ko_chunk_chars", "en_chunk_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)} must be at least 1")
        if self.tokenizer is not None:
            _check_tokenizer(self.tokenizer)


def _check_tokenizer(path: str) -> None:
    """A --tokenizer that is missing or not a tokenizer.json, refused before any work."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--tokenizer {path} does not exist; pass a tokenizer.json")
    try:
        load_hf_tokenizer(path)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(
            f"--tokenizer {path} is not a tokenizer.json ({first[:200]}); pass the "
            f"tokenizer.json of a model folder"
        ) from None


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def generate(seed: int = 0, scale: float = 1.0) -> list[dict]:
    """Every family's records, exact duplicates removed, in generation order."""
    if scale <= 0:
        raise ValueError(f"scale must be > 0 (got {scale}); use e.g. --scale 0.05 for a small one")
    out, seen = [], set()
    for name, gen, n in FAMILIES:
        for rec in gen(random.Random(f"{seed}:{name}"), max(1, round(n * scale))):
            key = json.dumps(rec, ensure_ascii=False, sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(rec)
    return out


def _group(qid: str) -> str:
    """The qid group a split is stratified over: "country", "math.shop", "tool.weather"..."""
    head, _, rest = qid.partition(".")
    return f"{head}.{rest.split('.')[0]}" if head in ("math", "tool") else head


def split_by_question(records: list[dict], seed: int = 0) -> dict:
    """``{"train", "valid", "test"}`` record lists; a qid lands in exactly one split."""
    groups: dict = {}
    for q in sorted({qid_of(r) for r in records}):
        groups.setdefault(_group(q), []).append(q)
    where = {}
    for qids in groups.values():
        qids.sort(key=lambda q: hashlib.sha256(f"{seed}:{q}".encode()).hexdigest())
        k = len(qids)
        n_test = max(1, round(k * HOLDOUT)) if k >= 4 else 0
        n_valid = max(1, round(k * HOLDOUT)) if k >= 8 else 0
        for i, q in enumerate(qids):
            where[q] = "test" if i < n_test else "valid" if i < n_test + n_valid else "train"
    splits = {"train": [], "valid": [], "test": []}
    for r in records:
        splits[where[qid_of(r)]].append(r)
    for name, recs in splits.items():
        random.Random(f"{seed}:order:{name}").shuffle(recs)
    return splits


def write_jsonl(path: str, records) -> None:
    """UTF-8, one compact JSON object a line, written to a temporary name and renamed."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def build(cfg: BuildConfig | None = None, log=print, write_to: str | None = None) -> dict:
    """Generate, split and write the bundled data; returns (and logs) the summary.

    ``write_to``: the folder the files go to when not ``cfg.out_dir`` (a staging folder that is
    moved into place afterwards); the log names ``cfg.out_dir``."""
    cfg = cfg or BuildConfig()
    root = write_to or cfg.out_dir
    splits = split_by_question(generate(cfg.seed, cfg.scale), cfg.seed)
    data_dir = os.path.join(root, "default")
    for name, recs in splits.items():
        write_jsonl(os.path.join(data_dir, f"{name}.jsonl"), recs)
    prompts = ssgt_prompts(sorted({qid_of(r) for r in splits["test"]}), cfg.seed)
    write_jsonl(os.path.join(data_dir, "ssgt_prompts.jsonl"), prompts)

    summary = {
        "seed": cfg.seed,
        "scale": cfg.scale,
        "examples": {k: len(v) for k, v in splits.items()},
        "families": family_counts(splits["train"]),
        "ssgt_prompts": len(prompts),
        "train_gt": {u: gt_stats(splits["train"], u) for u in ("char", "word")},
    }
    tok_path = cfg.tokenizer or os.path.join(WEIGHTS_ROOT, "cherry-tiny", "tokenizer.json")
    tok = load_hf_tokenizer(tok_path) if cfg.token_stats else None
    if tok is not None:
        summary["train_gt"]["token"] = gt_stats(splits["train"], "token", tok)
        summary["tokenizer"] = os.path.relpath(tok_path, _repo_root())
    if cfg.prose:
        summary["prose"] = {}
        for lang, n in (("ko", cfg.ko_chunk_chars), ("en", cfg.en_chunk_chars)):
            train, valid = prose_records(lang, n)
            write_jsonl(os.path.join(root, "prose", f"{lang}.jsonl"), train)
            write_jsonl(os.path.join(root, "prose", f"{lang}.valid.jsonl"), valid)
            summary["prose"][lang] = {
                "train": len(train),
                "valid": len(valid),
                "chars": sum(len(r["text"]) for r in train + valid),
            }
    with open(os.path.join(data_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, ensure_ascii=False, indent=1)
        f.write("\n")
    _log_summary(summary, os.path.join(cfg.out_dir, "default"), log)
    return summary


def _log_summary(summary: dict, data_dir: str, log) -> None:
    ex = summary["examples"]
    log(
        f"wrote {data_dir}: train {ex['train']}, valid {ex['valid']}, test {ex['test']} examples, "
        f"{summary['ssgt_prompts']} SSGT prompts"
    )
    log("train families: " + ", ".join(f"{k} {v}" for k, v in summary["families"].items()))
    for st in summary["train_gt"].values():
        log(format_stats(st))
    if "token" not in summary["train_gt"]:
        log("(no tokenizer.json yet: shares are in characters and words, not tokens)")
    for lang, p in summary.get("prose", {}).items():
        log(f"prose {lang}: {p['train']} train / {p['valid']} valid chunks, {p['chars']:,} chars")
