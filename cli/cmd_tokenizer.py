"""``cherry-mlx tokenizer``: train the sovereign tokenizer, inspect encodings, list specials."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cherry_mlx.models.presets import DEFAULT_PRESET

tokenizer_app = typer.Typer(
    help="Sovereign sentencepiece BPE tokenizer with 24 governance special tokens.",
    no_args_is_help=True,
)


@tokenizer_app.command("train")
def train(
    data: Optional[List[Path]] = typer.Option(
        None,
        "--data",
        "-d",
        help="Corpus files (.jsonl in any data shape, or .txt); repeatable. Default: the bundled "
        "data set and prose corpora (cherry-mlx data build).",
    ),
    vocab_size: int = typer.Option(4096, "--vocab-size", help="Total vocabulary size."),
    out: Path = typer.Option(Path("runs/tokenizer"), "-o", "--out", help="Output directory."),
    builtin_english: Optional[bool] = typer.Option(
        None,
        "--builtin-english/--no-builtin-english",
        help="Add CPython's pydoc English prose (default: only when there is no other corpus).",
    ),
    no_required_hangul: bool = typer.Option(
        False,
        "--no-required-hangul",
        help="Do not force the 2,350 KS X 1001 syllables into the vocabulary.",
    ),
    model_max_length: Optional[int] = typer.Option(None, help="Recorded context length."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Write into a non-empty -o (e.g. a preset), replacing only the "
        "tokenizer files (never into a trained model: its token ids would no longer match).",
    ),
):
    """Train a BPE tokenizer and write it in the Hugging Face layout (mlx-lm loads it).

    Example: cherry-mlx tokenizer train --vocab-size 4096 -o weights/cherry-tiny --force
    """
    from cherry_mlx.data.corpus import default_corpus_files, read_corpus
    from cherry_mlx.models.outputs import check_output
    from cherry_mlx.tokenizer import TokenizerConfig, train_tokenizer

    files = list(data) if data else default_corpus_files()
    check_output(out, files, force, weights_ok=False)
    cfg = TokenizerConfig(
        vocab_size=vocab_size,
        required_hangul=not no_required_hangul,
        model_max_length=model_max_length,
    )
    # pydoc English by default only when there is no other corpus (a fresh checkout)
    english = (not files) if builtin_english is None else builtin_english
    train_tokenizer(read_corpus(files), out, cfg, english, source=f"{len(files)} files")


@tokenizer_app.command("encode")
def encode(
    text: str = typer.Argument(..., help="Text to encode (special tokens are recognised)."),
    tokenizer: str = typer.Option(
        DEFAULT_PRESET, "-t", "--tokenizer", help="Preset, model/tokenizer directory or run."
    ),
):
    """Show the pieces and ids of TEXT.

    Example: cherry-mlx tokenizer encode '<|spartan_think|>서울은 수도'
    """
    from cherry_mlx.models.loading import resolve
    from cherry_mlx.tokenizer.inspect import format_encoding, load_any_tokenizer
    from cherry_mlx.training.prepare import find_tokenizer

    path = find_tokenizer(tokenizer) or resolve(tokenizer)
    typer.echo(format_encoding(load_any_tokenizer(path), text))


@tokenizer_app.command("specials")
def specials():
    """List the 24 governance special tokens with their ids and purpose."""
    from cherry_mlx.tokenizer.specials import SPECIAL_IDS, SPECIAL_TOKENS

    for t in SPECIAL_TOKENS:
        typer.echo(f"{SPECIAL_IDS[t.piece]:3d}  {t.piece:26} {t.group:14} {t.purpose}")


def register(app: typer.Typer) -> None:
    app.add_typer(tokenizer_app, name="tokenizer")
