"""Library calls behind ``cherry-mlx generate`` (one prompt) and ``chat``, and model loading for
serving."""

from __future__ import annotations

import sys
from typing import Iterator, Optional, Tuple

import mlx.core as mx
from mlx.utils import tree_map

from cherry_mlx._io import read_stdin_text, repair_text
from cherry_mlx.decoding.chat import ChatSession, model_context, render
from cherry_mlx.decoding.generate import (
    GenerationStats,
    check_serving_options,
    generate_tokens,
    limit_to_tokenizer,
)
from cherry_mlx.decoding.repl import chat_loop
from cherry_mlx.decoding.settings import ChatConfig, GenerateConfig, SamplingConfig
from cherry_mlx.decoding.speculative import speculative_generate_tokens
from cherry_mlx.models.loading import load_model, load_tokenizer
from cherry_mlx.models.mtp import has_mtp
from cherry_mlx.models.runs import latest_run


def default_model() -> str:
    run = latest_run(require_model=True)
    if run is None:
        raise ValueError(
            "no model given and no run under runs/: pass MODEL (a directory, run or "
            "hub id) or train one with `cherry-mlx train`"
        )
    return str(run)


def to_float32_on_cpu(model) -> None:
    """bf16/fp16 matmuls are ~40x slower than fp32 on MLX's CPU backend (measured on a 2-core
    x86 CPU): serve in fp32 there. Quantised weights and their uint8 scales are left alone."""
    if mx.default_device() != mx.cpu:
        return

    def cast(x):
        if isinstance(x, mx.array) and x.dtype in (mx.bfloat16, mx.float16):
            return x.astype(mx.float32)
        return x

    model.update(tree_map(cast, model.parameters()))


def load_for_serving(name: Optional[str]):
    """(model, tokenizer) ready to decode; MODEL defaults to the latest run."""

    name = name or default_model()
    model, _ = load_model(name)
    to_float32_on_cpu(model)
    model.eval()
    mx.eval(model.parameters())
    return model, load_tokenizer(name)


def fit_to_context(model, ids: list, what: str) -> list:
    """``ids`` cut to their last ``context`` tokens, said before the prefill: past its context a
    model's output is garbage anyway, and a 75k-token prompt on a 256-token model would spend
    minutes of quadratic attention on it."""
    context = model_context(model)
    if context and len(ids) > context:
        print(
            f"[note: {what} ({len(ids)} tokens) is longer than the model's context of {context}; "
            f"only its last {context} tokens are used: shorten it]",
            file=sys.stderr,
        )
        return list(ids[-context:])
    return ids


def generate_text(
    model,
    tokenizer,
    prompt: str,
    cfg: SamplingConfig = SamplingConfig(),
    max_tokens: int = 256,
    speculative: Optional[bool] = None,
    num_draft: Optional[int] = None,
    raw: bool = False,
    seed: Optional[int] = None,
) -> Iterator[Tuple[str, GenerationStats]]:
    """Stream (text piece, running stats) for one prompt, rendered with the chat template unless
    ``raw``; stops at an end-of-turn token (not shown) or ``max_tokens``."""
    check_serving_options(model, max_tokens, speculative, num_draft, seed)
    speculative = has_mtp(model) if speculative is None else speculative
    if seed is not None:
        mx.random.seed(seed)
    prompt, repaired = repair_text(prompt)
    if repaired:
        print("[note: the prompt was not valid Unicode; replaced with U+FFFD]", file=sys.stderr)
    if raw:
        ids = tokenizer.encode(prompt)
    else:
        ids = render(tokenizer, [{"role": "user", "content": prompt}])
    if not ids:
        raise ValueError(
            "the prompt encodes to 0 tokens (an empty --raw prompt, or one this tokenizer "
            "drops entirely); give some text, or drop --raw to use the chat template"
        )
    ids = fit_to_context(model, ids, "the prompt")
    stop = set(tokenizer.eos_token_ids)
    stats = GenerationStats()
    cfg = limit_to_tokenizer(cfg, model, tokenizer)
    kw = dict(cfg=cfg, max_tokens=max_tokens, stop=stop, stats=stats)
    if speculative:
        gen = speculative_generate_tokens(model, ids, num_draft=num_draft, seed=seed, **kw)
    else:
        gen = generate_tokens(model, ids, **kw)
    detok = tokenizer.detokenizer
    detok.reset()
    for tok in gen:
        if tok in stop:
            break
        detok.add_token(tok)
        # last_segment consumes what it returns: read it once per token
        if piece := detok.last_segment:
            yield piece, stats
    detok.finalize()
    yield detok.last_segment, stats


def load_named(model: Optional[str]):
    """``load_for_serving`` of ``model``, or of the latest run, saying which run that is (it may
    be one still training)."""
    if model is None:
        model = default_model()
        print(f"model: {model} (the latest run; pass MODEL to choose)", file=sys.stderr)
    return load_for_serving(model)


def generate_command(cfg: GenerateConfig) -> Optional[GenerationStats]:
    """``cherry-mlx generate``: stream the completion to stdout, then the speed (and acceptance)
    to stderr."""
    model, tokenizer = load_named(cfg.model)
    text = read_stdin_text() if cfg.prompt == "-" else cfg.prompt
    stats = None
    for piece, stats in generate_text(
        model, tokenizer, text, cfg.sampling, max_tokens=cfg.max_tokens,
        speculative=cfg.speculative, num_draft=cfg.num_draft, raw=cfg.raw, seed=cfg.seed,
    ):  # fmt: skip
        print(piece, end="", flush=True)
    print("")
    if stats is not None:
        print("=" * 10 + "\n" + stats.summary(), file=sys.stderr)
    return stats


def chat_command(cfg: ChatConfig) -> None:
    """``cherry-mlx chat``: the interactive loop over one ``ChatSession``."""
    model, tokenizer = load_named(cfg.model)
    context = getattr(getattr(model, "args", None), "max_position_embeddings", None)
    chat_loop(ChatSession(model, tokenizer, cfg), context)
