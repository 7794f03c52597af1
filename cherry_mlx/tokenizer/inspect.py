"""Look at how a tokenizer cuts text: pieces, ids, and whether anything fell back to bytes."""

from __future__ import annotations

from pathlib import Path


def load_any_tokenizer(path: str | Path):
    """A Hugging Face tokenizer from a directory with tokenizer files (a model, a run's copy or a
    bare tokenizer folder; the caller resolves preset names and runs to a directory)."""
    from transformers import AutoTokenizer

    path = Path(path).expanduser()
    if not ((path / "tokenizer.json").is_file() or (path / "tokenizer.model").is_file()):
        raise FileNotFoundError(f"{path} has no tokenizer files (tokenizer.json / tokenizer.model)")
    return AutoTokenizer.from_pretrained(str(path))


def byte_fallback_count(pieces) -> int:
    """Pieces that are raw bytes (``<0xAB>``): characters missing from the vocabulary."""
    return sum(1 for p in pieces if len(p) == 6 and p.startswith("<0x") and p.endswith(">"))


def format_encoding(tok, text: str) -> str:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    body = " ".join(f"{p}/{i}" for p, i in zip(pieces, ids))
    return (
        f"{body}\n{len(ids)} tokens for {len(text)} characters, "
        f"{byte_fallback_count(pieces)} byte-fallback pieces"
    )
