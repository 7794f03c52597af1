"""Data pipeline cost next to a training step, measured side by side in one run.

Encodes the bundled training set (or a synthetic multi-turn set when it is not built yet) with
the shipped cherry-tiny tokenizer, then times building one batch (numpy on the host + one
mx.array per field) against one value_and_grad step of the cherry-tiny model on that batch:
    python bench/bench_data_pipeline.py
"""

from __future__ import annotations

# ruff: noqa: I001  (cherry_mlx must be imported before mlx)

import time

import cherry_mlx  # noqa: F401  (fast BLAS before mlx)
import mlx.core as mx
import mlx.nn as nn

from cherry_mlx.data.batching import BatchIterator
from cherry_mlx.data.encode import encode_dataset
from cherry_mlx.data.jsonl import read_jsonl
from cherry_mlx.data.paths import DEFAULT_DATA_DIR
from cherry_mlx.models import build_model
from cherry_mlx.models.loading import load_config, load_tokenizer, resolve
from cherry_mlx.selection.losses import sgt_loss


def _examples():
    import os

    path = os.path.join(DEFAULT_DATA_DIR, "train.jsonl")
    if os.path.exists(path):
        return read_jsonl(path), path
    ex = {
        "messages": [
            {"role": "user", "content": "대한민국의 수도는 어디인가요?"},
            {
                "role": "assistant",
                "content": "대한민국의 수도는 서울입니다. 서울은 한강에 있습니다.",
                "gt": [{"start": 10, "end": 12, "level": 2, "category": "factual"}],
            },
            {"role": "user", "content": "Why is that?"},
            {
                "role": "assistant",
                "content": "Because it has been the capital since 1394.",
                "gt": [{"start": 37, "end": 41, "level": 1, "category": "factual"}],
            },
        ]
    }
    return [ex] * 2000, "synthetic"


def main(batch_size: int = 16, steps: int = 20):
    tok = load_tokenizer("cherry-tiny")
    cfg = load_config(resolve("cherry-tiny"))
    ctx = cfg["max_position_embeddings"]
    examples, source = _examples()
    t = time.perf_counter()
    enc, stats = encode_dataset(examples, tok, ctx)
    dt = time.perf_counter() - t
    print(
        f"encode {source}: {len(examples)} examples in {dt:.2f}s = "
        f"{len(examples) / dt:,.0f} examples/s, {stats.tokens / dt:,.0f} tokens/s"
    )
    print(stats.summary())

    it = BatchIterator(enc, batch_size, ctx, seed=0, bucket=True)
    t = time.perf_counter()
    batches = [next(it) for _ in range(steps)]
    mx.eval(batches)
    t_batch = (time.perf_counter() - t) / steps

    model = build_model(cfg)
    mx.eval(model.parameters())
    step = nn.value_and_grad(model, lambda m, b: sgt_loss(m, b)[0])
    mx.eval(step(model, batches[0]))  # warm-up
    t = time.perf_counter()
    for b in batches:
        mx.eval(step(model, b))
    t_step = (time.perf_counter() - t) / steps
    print(
        f"batch {t_batch * 1e3:.2f} ms vs train step {t_step * 1e3:.1f} ms "
        f"(B={batch_size}, T<={ctx}): batching costs {100 * t_batch / t_step:.2f}% of a step"
    )


if __name__ == "__main__":
    main()
