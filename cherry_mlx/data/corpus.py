"""Text corpora for the tokenizer: the bundled data set and prose, or the user's files."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from cherry_mlx.data.jsonl import example_texts, iter_jsonl
from cherry_mlx.data.paths import DATA_ROOT


def default_corpus_files() -> list[Path]:
    """The bundled data set and prose corpora, if ``cherry-mlx data build`` has written them."""
    root = Path(DATA_ROOT)
    files = [root / "default" / "train.jsonl"]
    # training splits only: valid/test text stays unseen by the tokenizer too
    files += sorted(p for p in (root / "prose").glob("*.jsonl") if ".valid" not in p.name)
    return [f for f in files if f.is_file()]


def read_corpus(files: Sequence[str | Path]) -> Iterator[str]:
    """Texts of JSONL data sets (every message, prompt, completion, text) and plain .txt files.

    Validation and GT spans are irrelevant here, but a malformed line still fails loudly."""
    for f in files:
        f = Path(f)
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no such corpus file; pass .jsonl or .txt files")
        if f.suffix == ".jsonl":
            for ex in iter_jsonl(f):
                yield from example_texts(ex)
        else:
            try:
                yield f.read_text(encoding="utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{f}: not UTF-8 text (byte {err.start} is {err.object[err.start]:#04x}); "
                    "pass .jsonl data sets or UTF-8 .txt files, not binaries"
                ) from None
