"""A chat session over the model's own chat template, with the KV cache kept across turns.

The conversation is kept as the exact tokens the model has seen (prompts and its own answers, end
token included): re-rendering an answer's text could tokenise it differently, and a template may
render earlier turns differently once they are history (e.g. drop a generation-prompt token). A
new turn is therefore history + the tokens of the template's *new* text (the whole conversation
rendered, minus the rendering of the conversation so far; the cherry template writes the
governance tokens ``<|spartan_user|>``, ``<|spartan_assistant|>``, ``<|spartan_end|>``, ...). If the
template does not render incrementally, the whole conversation is re-rendered. Either way the
caches are trimmed (mlx-lm's ``KVCache.trim``) to the longest common prefix with the tokens they
hold and only the rest is prefilled, so a mismatch costs a re-prefill, never a wrong cache.

Generation stops at any end-of-turn id (``tokenizer.eos_token_ids``; the stop token itself is not
shown) or ``max_tokens``; closing the token stream (Ctrl-C in the CLI) ends a turn early and keeps
the session consistent: the cache is trimmed back to the tokens actually produced.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional

from cherry_mlx.decoding.adaptive import AdaptiveDraft
from cherry_mlx.decoding.generate import (
    GenerationStats,
    check_serving_options,
    generate_tokens,
    limit_to_tokenizer,
)
from cherry_mlx.decoding.settings import ChatConfig
from cherry_mlx.decoding.speculative import speculative_generate_tokens
from cherry_mlx.models.mtp import has_mtp


def _has_template(tokenizer) -> bool:
    return bool(
        getattr(tokenizer, "chat_template", None) or getattr(tokenizer, "has_chat_template", False)
    )


def render_text(tokenizer, messages: List[Dict[str, str]], add_generation_prompt: bool = True):
    """The conversation as text under the tokenizer's chat template (no template: plain
    ``role: content`` lines, so hub models without one still work)."""
    if _has_template(tokenizer):
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=False
        )
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return text + ("assistant: " if add_generation_prompt else "")


def render(tokenizer, messages: List[Dict[str, str]], add_generation_prompt: bool = True):
    """Token ids of a conversation under the chat template."""
    if _has_template(tokenizer):
        return list(
            tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
        )
    return tokenizer.encode(render_text(tokenizer, messages, add_generation_prompt))


def model_context(model) -> Optional[int]:
    """The model's context length in tokens (``max_position_embeddings``), if it has one."""
    return getattr(getattr(model, "args", None), "max_position_embeddings", None)


class ChatSession:
    """Multi-turn chat: ``send(text)`` streams the answer's text pieces."""

    def __init__(self, model, tokenizer, cfg: Optional[ChatConfig] = None):
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg or ChatConfig()
        cfg = self.cfg
        check_serving_options(model, cfg.max_tokens, cfg.speculative, cfg.num_draft, cfg.seed)
        self.speculative = has_mtp(model) if self.cfg.speculative is None else self.cfg.speculative
        # one drafting controller for the whole conversation: what it learnt about the heads'
        # acceptance and cost carries over from turn to turn
        self.drafting = None
        if self.speculative:
            k = self.cfg.num_draft or model.mtp.num_heads
            self.drafting = AdaptiveDraft(k)
        self.stop = set(tokenizer.eos_token_ids)
        self.sampling = limit_to_tokenizer(cfg.sampling, model, tokenizer)
        self.total = GenerationStats()
        self.last = GenerationStats()
        self.reset()
        context = model_context(model)
        if cfg.system and context:  # checked before any prefill: it is part of every turn
            n = len(render(tokenizer, self.messages, add_generation_prompt=False))
            if n > context:
                raise ValueError(
                    f"--system is {n} tokens, longer than the model's context of {context}; "
                    "shorten it"
                )

    def reset(self) -> None:
        """Forget the conversation (keeps the system prompt) and empty the caches."""
        self.messages: List[Dict[str, str]] = []
        if self.cfg.system:
            self.messages.append({"role": "system", "content": self.cfg.system})
        self.cache = self.model.make_cache()
        self.fed: List[int] = []  # tokens whose keys/values are in the cache, in order
        self.history: List[int] = []  # every token of the conversation the model has seen
        self.last_prompt: List[int] = []
        self.last_tokens: List[int] = []
        self.last = GenerationStats()  # "last turn" belongs to the conversation; totals do not

    def _sync(self, prompt: List[int]) -> int:
        """Trim the caches to the longest common prefix of the cached tokens and ``prompt`` (at
        least one prompt token is left to prefill); returns that prefix length."""
        n = 0
        limit = min(len(self.fed), len(prompt) - 1)
        while n < limit and self.fed[n] == prompt[n]:
            n += 1
        self._trim_to(n)
        return n

    def _trim_to(self, n: int) -> None:
        for c in self.cache:
            if c.offset > n:
                c.trim(c.offset - n)
        self.fed = self.fed[:n]

    def _prompt(self) -> List[int]:
        """History tokens + the tokens of the new turn's text (see module docstring)."""
        if self.history and self.messages[:-1]:
            before = render_text(self.tokenizer, self.messages[:-1], add_generation_prompt=False)
            after = render_text(self.tokenizer, self.messages)
            if after.startswith(before):
                hist = list(self.history)
                if hist[-1] not in self.stop:  # an interrupted answer: close its turn
                    hist.append(min(self.stop))
                new = self.tokenizer.encode(after[len(before) :], add_special_tokens=False)
                return hist + list(new)
        return render(self.tokenizer, self.messages)

    def send(self, text: str) -> Iterator[str]:
        """Add a user turn and stream the assistant's answer as text pieces."""
        self.messages.append({"role": "user", "content": text})
        prompt = self._prompt()
        context = model_context(self.model)
        new = len(prompt) - min(len(self.fed), len(prompt) - 1)
        if context and new > context:  # refused before a prefill of minutes
            self.messages.pop()
            raise ValueError(
                f"this message adds {new} tokens, more than the model's context of {context}; "
                "shorten it"
            )
        self.last_prompt = prompt
        prefix = self._sync(prompt)
        self.last = GenerationStats()
        kwargs = dict(
            cfg=self.sampling,
            max_tokens=self.cfg.max_tokens,
            cache=self.cache,
            stop=self.stop,
            stats=self.last,
            prefix_len=prefix,
        )
        if self.speculative:
            gen = speculative_generate_tokens(
                self.model, prompt, num_draft=self.cfg.num_draft, seed=self.cfg.seed,
                adaptive=self.drafting, **kwargs,
            )  # fmt: skip
        else:
            gen = generate_tokens(self.model, prompt, **kwargs)
        detok = self.tokenizer.detokenizer
        detok.reset()
        out: List[int] = []
        try:
            for tok in gen:
                out.append(tok)
                if tok in self.stop:
                    break
                detok.add_token(tok)
                # last_segment consumes what it returns: read it once per token
                if piece := detok.last_segment:
                    yield piece
            detok.finalize()
            if piece := detok.last_segment:
                yield piece
        finally:
            gen.close()
            # The cache may hold fewer (last token not fed) or more (verified drafts past a stop)
            # positions than prompt + out: keep exactly the known tokens it holds.
            full = prompt + out
            self.history, self.last_tokens = full, out
            self.fed = full[: min(self.cache[0].offset, len(full))] if self.cache else []
            self._trim_to(len(self.fed))
            answer = [t for t in out if t not in self.stop]
            self.messages.append({"role": "assistant", "content": self.tokenizer.decode(answer)})
            self._add_stats(self.last)

    def _add_stats(self, s: GenerationStats) -> None:
        t = self.total
        for name in (
            "prompt_tokens",
            "generated",
            "prefill_s",
            "decode_s",
            "rounds",
            "accepted",
            "drafted",
        ):
            setattr(t, name, getattr(t, name) + getattr(s, name))

    def stats_text(self) -> str:
        mode = "self-speculative (MTP)" if self.speculative else "plain"
        return (
            f"[{mode}] last turn: {self.last.summary()}\n"
            f"[{mode}] session:   {self.total.summary()}; cache holds {len(self.fed)} tokens"
        )
