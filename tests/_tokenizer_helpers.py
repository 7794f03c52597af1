"""A tokenizer trained inside the tests (nanochat style, well under a second) on a fixed corpus."""

from __future__ import annotations

from pathlib import Path

from cherry_mlx.tokenizer import TokenizerConfig, train_tokenizer

KOREAN = [
    "대한민국의 수도는 서울입니다. 서울은 한강을 끼고 있는 도시입니다.",
    "아차, 틀렸다. 정답은 부산이 아니라 서울입니다.",
    "잠깐, 이 사실을 확인해 보겠습니다. 확인 결과 맞습니다.",
    "그 요청은 도와드릴 수 없습니다. 대신 안전한 방법을 알려 드리겠습니다.",
    "계산해 봅시다. 12 더하기 30은 42입니다. 따라서 답은 42입니다.",
]


def train_small(out_dir: Path, vocab_size: int = 3200) -> Path:
    """Sovereign tokenizer on CPython's English docs plus a little Korean (deterministic)."""
    cfg = TokenizerConfig(vocab_size=vocab_size, num_threads=1)
    return train_tokenizer(
        KOREAN * 20, out_dir=out_dir, cfg=cfg, english_builtin=True, verbose=False
    )
