"""The 24 governance special tokens of the sovereign tokenizer and the required Hangul syllables.

The paper (Section 5.1) names ``<|spartan_think|>``, ``<|spartan_tool|>`` and ``<|spartan_refuse|>``
and says there are 24 tokens "that encode reasoning mode, tool invocation, and safety governance";
it does not list the rest, so this module decides the full set. Every token is a single vocabulary
entry that the tokenizer never splits (sentencepiece user-defined symbols, Hugging Face special
added tokens), and their ids are fixed: ``<unk>`` is id 0 and the tokens below take ids 1..24 in
this order, so models trained with any retrained tokenizer agree on them.

One token, ``<|spartan_end|>``, is both the end of a chat turn and the end of a document (the
tokenizer's eos): a chat model that emits it stops, and every loader (mlx-lm, transformers) sees a
single eos id without extra configuration.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpecialToken:
    piece: str
    group: str
    purpose: str


SPECIAL_TOKENS: tuple[SpecialToken, ...] = (
    # sequence
    SpecialToken("<|spartan_bos|>", "sequence", "beginning of a sequence (bos)"),
    SpecialToken("<|spartan_end|>", "sequence", "end of a turn and of a document (eos)"),
    SpecialToken("<|spartan_pad|>", "sequence", "padding, never supervised"),
    # turns
    SpecialToken("<|spartan_system|>", "turn", "opens a system turn"),
    SpecialToken("<|spartan_user|>", "turn", "opens a user turn"),
    SpecialToken("<|spartan_assistant|>", "turn", "opens an assistant turn"),
    SpecialToken("<|spartan_tool_result|>", "turn", "opens a tool turn (a tool call's result)"),
    # reasoning mode
    SpecialToken("<|spartan_think|>", "reasoning", "opens the assistant's reasoning"),
    SpecialToken("<|spartan_think_end|>", "reasoning", "closes the reasoning"),
    SpecialToken("<|spartan_no_think|>", "reasoning", "system-prompt flag: answer, no thinking"),
    SpecialToken("<|spartan_answer|>", "reasoning", "marks the final answer after reasoning"),
    # tool invocation
    SpecialToken("<|spartan_tools|>", "tools", "opens the JSON list of available tools"),
    SpecialToken("<|spartan_tools_end|>", "tools", "closes the list of tools"),
    SpecialToken("<|spartan_tool|>", "tools", "opens a tool call (JSON name + arguments)"),
    SpecialToken("<|spartan_tool_end|>", "tools", "closes a tool call"),
    # retrieved context (RAG)
    SpecialToken("<|spartan_context|>", "context", "opens a retrieved document"),
    SpecialToken("<|spartan_context_end|>", "context", "closes a retrieved document"),
    # safety governance
    SpecialToken("<|spartan_refuse|>", "governance", "refusal pivot (guardrail moment)"),
    SpecialToken("<|spartan_safe|>", "governance", "safe redirect after a refusal"),
    SpecialToken("<|spartan_unsure|>", "governance", "calibrated abstention: not enough evidence"),
    # meta-cognitive moments (SSGT)
    SpecialToken("<|spartan_atcha|>", "metacognition", "self-correction pivot (Atcha, '아차')"),
    SpecialToken("<|spartan_jamkkan|>", "metacognition", "verification trigger (Jamkkan, '잠깐')"),
    SpecialToken("<|spartan_verified|>", "metacognition", "verified conclusion follows"),
    # structure
    SpecialToken("<|spartan_sep|>", "structure", "separates packed documents or output fields"),
)
assert len(SPECIAL_TOKENS) == 24

SPECIAL_PIECES: tuple[str, ...] = tuple(t.piece for t in SPECIAL_TOKENS)
UNK = "<unk>"
BOS = "<|spartan_bos|>"
EOS = "<|spartan_end|>"
PAD = "<|spartan_pad|>"
# id of a special piece in every tokenizer we train (<unk> is 0)
SPECIAL_IDS = {p: i + 1 for i, p in enumerate(SPECIAL_PIECES)}


def ks_x_1001_hangul() -> str:
    """The 2,350 precomposed Hangul syllables of KS X 1001 (those U+AC00..U+D7A3 EUC-KR encodes).

    Required characters of the tokenizer: everyday Korean then never falls back to bytes, while the
    other 8,822 rare syllables still encode through byte fallback.
    """
    out = []
    for code in range(0xAC00, 0xD7A4):
        ch = chr(code)
        # Python's euc-kr codec also writes the other syllables as 8-byte KS X 1001 Annex 3
        # make-up sequences; the 2,350 precomposed ones are exactly the 2-byte codes.
        if len(ch.encode("euc-kr", errors="ignore")) == 2:
            out.append(ch)
    return "".join(out)
