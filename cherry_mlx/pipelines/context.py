"""What every ``repro`` stage shares: the source model, data, held-out sets, training,
evaluation and greedy-decoding helpers, and the stage progress bar.

Held-out evaluation is on three sets, none used for training: the bundled chat data's valid split
(response tokens, split into GT / non-GT), and the English and Korean prose valid files (every
token of the text). Each is cut to ``eval_batches`` fixed batches, the same for every arm.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import mlx.core as mx

from cherry_mlx.data.jsonl import read_jsonl
from cherry_mlx.data.paths import prose_paths
from cherry_mlx.data.shuffle import shuffle_batch
from cherry_mlx.data.teacher_cache import TeacherCache, model_fingerprint
from cherry_mlx.decoding.adaptive import AdaptiveDraft
from cherry_mlx.decoding.chat import render
from cherry_mlx.decoding.generate import GenerationStats, generate_tokens
from cherry_mlx.decoding.speculative import speculative_generate_tokens
from cherry_mlx.evaluation.wave import SplitLoss, split_losses
from cherry_mlx.models.loading import load_model, resolve
from cherry_mlx.pipelines.config import Budget, ReproConfig
from cherry_mlx.training.config import TrainConfig
from cherry_mlx.training.data import default_data_dir, load_split, valid_batches
from cherry_mlx.training.prepare import find_tokenizer, open_tokenizer, prepare
from cherry_mlx.training.teacher import build_cache
from cherry_mlx.training.teacher_config import TeacherConfig
from cherry_mlx.training.trainer import train

PROSE = ("en", "ko")
TEACHER_DIR = "teacher-cache"  # OUT/teacher-cache/seqT: the source's teacher cache, one per run
SHARD_ROWS = 16  # rows per teacher-cache shard: the unit of resume and of growth


class StageBar:
    """One progress bar per stage, counting its tasks (training arms, measurements)."""

    def __init__(self, stage: str, total: int):
        self.bar = None
        if not os.environ.get("CHERRY_MLX_QUIET"):
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=f"repro {stage}", unit="task", file=sys.stderr)

    def step(self, what: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(what)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class Context:
    """The source model and the data, loaded once per ``repro`` process."""

    cfg: ReproConfig
    out: Path
    source_dir: Path
    tokenizer: Any
    tokenizer_dir: Optional[Path]
    train: list  # encoded chat examples
    train_records: list  # raw chat records (task families for MoEE)
    valid: list  # encoded chat valid examples (the cut used for evaluation)
    sets: Dict[str, List[dict]] = field(default_factory=dict)  # name -> held-out batches

    @property
    def budget(self) -> Budget:
        return self.cfg.spec

    def load_source(self):
        model, config = load_model(self.source_dir)
        return model, config

    def runs_dir(self, stage: str, fresh: bool = False) -> Path:
        """Run directories of a stage; ``fresh`` clears a killed attempt's leftovers."""
        path = self.out / "runs" / stage
        if fresh and path.exists():
            shutil.rmtree(path)
        return path

    def teacher_cache(self, rows: int) -> TeacherCache:
        """The source's teacher cache over the chat training data (top-k logits, GT levels and
        the residual stream entering every block), built once per repro directory into
        ``OUT/teacher-cache/seqT`` and shared by every seed and stage; a stage that needs more
        rows than are there extends it. Resumable shard by shard (``training.teacher``)."""
        b = self.budget
        path = self.out / TEACHER_DIR / f"seq{b.seq_len}"
        rows = -(-rows // SHARD_ROWS) * SHARD_ROWS  # whole shards: a later extension appends
        fp = model_fingerprint(self.source_dir)
        if (path / "manifest.json").is_file():
            cache = TeacherCache.open(path, fingerprint=fp)
            if cache.rows >= rows:
                return cache
        cfg = TeacherConfig(
            model=str(self.source_dir), out=str(path), seq_len=b.seq_len, max_rows=rows,
            data=str(self.cfg.data or default_data_dir()), hidden_layers="all",
            rows_per_shard=SHARD_ROWS, batch_size=b.batch_size,
        )  # fmt: skip
        build_cache(cfg, log=lambda *_: None)
        return TeacherCache.open(path, fingerprint=fp)

    def train_cfg(self, stage: str, name: str, steps: int, seed: int, **kw) -> TrainConfig:
        b = self.budget
        base = dict(
            steps=steps, batch_size=b.batch_size, seq_len=b.seq_len,
            learning_rate=b.learning_rate, warmup=min(10, steps // 5), seed=seed,
            eval_every=0, save_every=steps, keep_checkpoints=1, demo=False, report_every=max(
                1, min(10, steps)), runs_dir=str(self.runs_dir(stage)), name=name,
            tokenizer=str(self.tokenizer_dir) if self.tokenizer_dir else None,
        )  # fmt: skip
        return TrainConfig(**{**base, **kw})

    def fit(self, model, cfg: TrainConfig, train_data=None, reference=None, callbacks=()):
        """Train ``model`` in place (no trainer evals: the stages evaluate on their own sets)."""
        mx.random.seed(cfg.seed)
        result = train(
            cfg, model=model, tokenizer=self.tokenizer, train_data=train_data or self.train,
            valid_data=[], reference=reference, callbacks=callbacks,
        )  # fmt: skip
        if result.model is not None and result.model is not model:
            model.update(result.model.parameters())
        mx.eval(model.parameters())
        return model

    def evaluate(self, model, shuffled: bool = False) -> Dict[str, Any]:
        """Held-out losses on every set: the chat split (total / GT / non-GT) and prose."""
        model.eval()
        out: Dict[str, Any] = {}
        chat = split_losses(model, self.sets["chat_shuffled" if shuffled else "chat"])
        out["chat"] = chat.to_dict()
        for lang in PROSE:
            if self.sets.get(lang):
                s = split_losses(model, self.sets[lang])
                out[lang] = {"loss": s.total, "ppl": _ppl(s.total), "tokens": s.n_total}
        return out


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 700.0)) if math.isfinite(loss) else math.nan


def as_split(d: Dict[str, Any]) -> SplitLoss:
    """A ``SplitLoss`` back from its ``to_dict()`` (stage JSON -> wave formulas)."""
    keys = ("total", "gt", "non_gt", "n_total", "n_gt", "n_non_gt", "per_category")
    return SplitLoss(**{k: d[k] for k in keys})


def build_context(cfg: ReproConfig, out: Path, source_dir: Path) -> Context:
    """Tokenizer, chat splits and the fixed held-out batches of every evaluation set."""
    b = cfg.spec
    tok_dir = find_tokenizer(None, [str(source_dir), cfg.model])
    if tok_dir is None:
        raise FileNotFoundError(f"{cfg.model}: no tokenizer files; pass a model with a tokenizer")
    tokenizer = open_tokenizer(tok_dir)
    prep = prepare(cfg.data, b.seq_len, tokenizer_obj=tokenizer, tokenizer_dir=tok_dir,
                   verbose=False)  # fmt: skip
    n_valid = len(prep.valid) if b.eval_batches < 0 else b.eval_batches * b.batch_size
    valid = list(prep.valid)[:n_valid]
    ctx = Context(
        cfg=cfg, out=out, source_dir=source_dir, tokenizer=tokenizer, tokenizer_dir=tok_dir,
        train=prep.train, train_records=prep.splits.get("train_examples") or [], valid=valid,
    )  # fmt: skip
    ctx.sets["chat"] = valid_batches(valid, b.batch_size, b.seq_len)
    ctx.sets["chat_shuffled"] = [shuffle_batch(x, seed=i) for i, x in enumerate(ctx.sets["chat"])]
    # γ̄ is measured per batch (their spread is its noise): its own cut, the budget's size
    couple = list(prep.valid)[: b.coupling_batches * b.batch_size]
    ctx.sets["coupling"] = valid_batches(couple, b.batch_size, b.seq_len)
    ctx.sets["coupling_shuffled"] = [shuffle_batch(x, seed=i)
                                     for i, x in enumerate(ctx.sets["coupling"])]  # fmt: skip
    for lang in PROSE:
        try:
            path = prose_paths(lang)["valid"]
        except FileNotFoundError:
            continue  # prose not built: the report says "not measured"
        enc, _, _ = load_split(Path(path), tokenizer, b.seq_len)
        ctx.sets[lang] = valid_batches(enc[:n_valid], b.batch_size, b.seq_len)
    return ctx


def has_weights(model: str) -> bool:
    path = resolve(model)
    return any(Path(path).glob("*.safetensors"))


def source_config(cfg: ReproConfig, out: Path, seed: int = 0) -> TrainConfig:
    """Full-loss training from scratch of a preset without weights (the tiny budget's source)."""
    b = cfg.spec
    return TrainConfig(
        preset=cfg.model, steps=b.pretrain_steps, batch_size=b.batch_size, seq_len=b.seq_len,
        learning_rate=3e-3, warmup=min(20, b.pretrain_steps // 5), select="all", seed=seed,
        eval_every=0, save_every=b.pretrain_steps, keep_checkpoints=1, demo=False,
        runs_dir=str(out / "runs" / "source"), name="pretrain", data=cfg.data,
        report_every=max(1, min(10, b.pretrain_steps)), eval_batches=1,
    )  # fmt: skip


def family(record: dict) -> str:
    """Task family of a bundled chat record (ids are ``family:...``)."""
    return str(record.get("id", "")).split(":")[0]


def chat_prompts(tokenizer, data_dir: Optional[str], count: int) -> List[List[int]]:
    """Prompts (the turns before the first answer) of held-out chat records, rendered with the
    chat template: acceptance is only meaningful on the kind of text the heads were trained on."""
    path = Path(data_dir or default_data_dir()) / "valid.jsonl"
    prompts = []
    for ex in read_jsonl(path):
        msgs = ex.get("messages") or []
        first = next((i for i, m in enumerate(msgs) if m["role"] == "assistant"), None)
        if first:
            prompts.append(render(tokenizer, msgs[:first]))
        if len(prompts) == count:
            break
    return prompts


def greedy_decode(model, prompts, n: int, k: int = 0):
    """(tokens per prompt, stats) of greedy decoding; ``k`` > 0 drafts up to k tokens with MTP
    heads, one adaptive controller across the prompts (as a chat session keeps one)."""
    st, outs = GenerationStats(), []
    ctrl = AdaptiveDraft(k) if k else None
    for p in prompts:
        if k:
            gen = speculative_generate_tokens(model, p, max_tokens=n, stats=st, num_draft=k,
                                              adaptive=ctrl)  # fmt: skip
        else:
            gen = generate_tokens(model, p, max_tokens=n, stats=st)
        outs.append(list(gen))
    return outs, st
