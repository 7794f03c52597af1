"""``cherry-mlx generate`` and ``cherry-mlx chat``: local serving, speculative with MTP heads."""

from __future__ import annotations

from typing import Optional

import typer

MODEL_HELP = "Model directory, run, preset or hub id (default: the latest run under runs/)."


def _sampling(temp, top_p, top_k, min_p, repetition_penalty):
    from cherry_mlx.decoding.generate import SamplingConfig

    return SamplingConfig(
        temp=temp, top_p=top_p, top_k=top_k, min_p=min_p, repetition_penalty=repetition_penalty
    )


def _load(model: Optional[str]):
    from cherry_mlx.decoding.session import default_model, load_for_serving

    if model is None:  # say which run "the latest" is: it may be one still training
        model = default_model()
        typer.echo(f"model: {model} (the latest run; pass MODEL to choose)", err=True)
    return load_for_serving(model)


# Sampling options shared by `generate` and `chat` (typer reads the same OptionInfo in both).
TEMP = typer.Option(0.0, "--temp", help="Sampling temperature (0 = greedy).")
TOP_P = typer.Option(1.0, "--top-p", help="Nucleus sampling mass (1 = off).")
TOP_K = typer.Option(0, "--top-k", help="Sample among the k most likely (0 = off).")
MIN_P = typer.Option(0.0, "--min-p", help="Min-p filter (0 = off).")
REPETITION_PENALTY = typer.Option(1.0, "--repetition-penalty", help="1 = off.")
SPECULATIVE = typer.Option(
    None,
    "--speculative/--no-speculative",
    help="Self-speculative decoding with the MTP heads (default: on when the model has them).",
)
NUM_DRAFT = typer.Option(None, "--num-draft", help="Heads used to draft.")
SEED = typer.Option(None, "--seed", min=0, help="Random seed for sampling.")


def register(app: typer.Typer) -> None:
    @app.command()
    def generate(
        model: Optional[str] = typer.Argument(None, help=MODEL_HELP),
        prompt: str = typer.Option(..., "--prompt", "-p", help="Prompt text ('-' reads stdin)."),
        max_tokens: int = typer.Option(256, "--max-tokens", "-m", help="Tokens to generate."),
        temp: float = TEMP,
        top_p: float = TOP_P,
        top_k: int = TOP_K,
        min_p: float = MIN_P,
        repetition_penalty: float = REPETITION_PENALTY,
        speculative: Optional[bool] = SPECULATIVE,
        num_draft: Optional[int] = NUM_DRAFT,
        raw: bool = typer.Option(False, "--raw", help="Do not apply the chat template."),
        seed: Optional[int] = SEED,
    ):
        """Generate a completion for one prompt, streaming, then print speed (and acceptance)."""
        from cherry_mlx._io import read_stdin_text
        from cherry_mlx.decoding.session import generate_text

        sampling = _sampling(temp, top_p, top_k, min_p, repetition_penalty)  # before any work
        model_obj, tokenizer = _load(model)
        text = read_stdin_text() if prompt == "-" else prompt
        stats = None
        for piece, stats in generate_text(
            model_obj,
            tokenizer,
            text,
            sampling,
            max_tokens=max_tokens,
            speculative=speculative,
            num_draft=num_draft,
            raw=raw,
            seed=seed,
        ):
            typer.echo(piece, nl=False)
        typer.echo("")
        if stats is not None:
            typer.echo("=" * 10 + "\n" + stats.summary(), err=True)

    @app.command()
    def chat(
        model: Optional[str] = typer.Argument(None, help=MODEL_HELP),
        system: Optional[str] = typer.Option(None, "--system", help="System prompt."),
        max_tokens: int = typer.Option(512, "--max-tokens", "-m", help="Tokens per answer."),
        temp: float = TEMP,
        top_p: float = TOP_P,
        top_k: int = TOP_K,
        min_p: float = MIN_P,
        repetition_penalty: float = REPETITION_PENALTY,
        speculative: Optional[bool] = SPECULATIVE,
        num_draft: Optional[int] = NUM_DRAFT,
        seed: Optional[int] = SEED,
    ):
        """Interactive chat with the model's chat template; the KV cache is kept across turns.
        Commands: /reset (new conversation), /stats (tokens/s, acceptance), /quit. Ctrl-C stops
        an answer, Ctrl-D or /quit leaves."""
        from cherry_mlx.decoding.chat import ChatConfig, ChatSession
        from cherry_mlx.decoding.repl import chat_loop

        sampling = _sampling(temp, top_p, top_k, min_p, repetition_penalty)  # before any work
        model_obj, tokenizer = _load(model)
        cfg = ChatConfig(
            sampling=sampling,
            max_tokens=max_tokens,
            speculative=speculative,
            num_draft=num_draft,
            system=system,
            seed=seed,
        )
        session = ChatSession(model_obj, tokenizer, cfg)
        context = getattr(getattr(model_obj, "args", None), "max_position_embeddings", None)
        chat_loop(session, context)
