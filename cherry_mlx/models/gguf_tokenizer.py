"""A Hugging Face ``tokenizers`` tokenizer rebuilt from a GGUF file's metadata.

A GGUF carries no ``tokenizer.json``: llama.cpp stores the vocabulary (``tokenizer.ggml.tokens``),
the merges or the sentencepiece scores, the token kinds (1 normal, 2 unknown, 3 control, 4 user
defined, 6 byte) and the name of its pre-tokenizer (``tokenizer.ggml.pre``), and splits text with
its own table of regexes per name. We rebuild the same pipeline with the ``tokenizers`` library:

- ``gpt2`` (byte-level BPE: GPT-2, Llama 3, Qwen2/3, SmolLM2): the file's merges; the split regexes
  of llama.cpp for the named pre-tokenizer, then the byte-level alphabet.
- ``llama`` (sentencepiece BPE: Llama 1/2, Mistral): merges recovered from the scores (the pair
  whose merged piece scores highest merges first), byte fallback for ``<0xNN>`` tokens, and the
  ``▁`` space prefix.
Control tokens become special added tokens so ``<|im_start|>`` is never cut into pieces.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, processors
from tokenizers import pre_tokenizers as pre

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> the regexes llama.cpp applies in turn before byte-level BPE.
PRE_SPLITS: Dict[str, Tuple[str, ...]] = {
    "default": (_GPT2,),
    "gpt-2": (_GPT2,),
    "gpt2": (_GPT2,),
    "smollm": (r"\p{N}", _GPT2),  # digits one by one, then GPT-2's pattern
    "starcoder": (r"\p{N}", _GPT2),
    "llama3": (_LLAMA3,),
    "llama-v3": (_LLAMA3,),
    "llama-bpe": (_LLAMA3,),
    "smaug-bpe": (_LLAMA3,),
    "qwen2": (_QWEN2,),
    "deepseek-r1-qwen": (_QWEN2,),
}
TOKENIZER_TYPES = ("gpt2", "llama")
CONTROL, USER_DEFINED = 3, 4


def _unsupported(path, what: str, value, known) -> ValueError:
    return ValueError(
        f"{path}: {what} {value!r} is not supported by cherry-mlx's GGUF import (known: "
        f"{', '.join(known)}); convert the original Hugging Face checkpoint instead"
    )


def build_tokenizer(meta: Dict[str, Any], path) -> Tokenizer:
    """The tokenizer a GGUF's ``tokenizer.ggml.*`` metadata describes."""
    kind = meta.get("tokenizer.ggml.model")
    tokens: List[str] = list(meta.get("tokenizer.ggml.tokens") or [])
    if kind not in TOKENIZER_TYPES or not tokens:
        raise _unsupported(path, "tokenizer type", kind, TOKENIZER_TYPES)
    types = list(meta.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    vocab: Dict[str, int] = {}
    for i, tok in enumerate(tokens):
        vocab.setdefault(tok, i)  # a duplicated piece keeps its first id, as llama.cpp does
    if kind == "gpt2":
        tok = _byte_level_bpe(meta, vocab, path)
    else:
        tok = _sentencepiece_bpe(meta, tokens, vocab)
    specials = [
        AddedToken(t, special=True, normalized=False)
        for t, ty in zip(tokens, types)
        if ty == CONTROL and t
    ]
    tok.add_special_tokens(specials)
    user = [
        AddedToken(t, special=False, normalized=False)
        for t, ty in zip(tokens, types)
        if ty == USER_DEFINED and t
    ]
    if user:
        tok.add_tokens(user)
    return tok


def _byte_level_bpe(meta, vocab, path) -> Tokenizer:
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or []]
    tok = Tokenizer(models.BPE(vocab, merges, ignore_merges=False))
    name = meta.get("tokenizer.ggml.pre", "default")
    if name not in PRE_SPLITS:
        raise _unsupported(path, "pre-tokenizer", name, sorted(PRE_SPLITS))
    splits = [pre.Split(Regex(rx), behavior="isolated") for rx in PRE_SPLITS[name]]
    tok.pre_tokenizer = pre.Sequence(
        splits + [pre.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def _sentencepiece_bpe(meta, tokens: List[str], vocab: Dict[str, int]) -> Tokenizer:
    scores = list(meta.get("tokenizer.ggml.scores") or [-float(i) for i in range(len(tokens))])
    score = {t: s for t, s in zip(tokens, scores)}
    merges = []  # every split of a piece into two known pieces, best merged score first
    for piece, pid in vocab.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                merges.append((-score[piece], vocab[left], vocab[right], left, right))
    merges.sort()
    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    unk = tokens[int(unk_id)] if unk_id is not None else None
    model = models.BPE(
        vocab, [(m[3], m[4]) for m in merges], unk_token=unk, byte_fallback=True, fuse_unk=True
    )
    tok = Tokenizer(model)
    steps = [normalizers.Replace(" ", "\u2581")]
    if meta.get("tokenizer.ggml.add_space_prefix", True):
        steps.insert(0, normalizers.Prepend("\u2581"))
    tok.normalizer = normalizers.Sequence(steps)
    strip = [decoders.Strip(" ", 1, 0)] if meta.get("tokenizer.ggml.add_space_prefix", True) else []
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()] + strip
    )
    return tok


def tokenizer_config(meta: Dict[str, Any], tokens: List[str]) -> Dict[str, Any]:
    """``tokenizer_config.json``: special tokens, BOS/EOS flags and the chat template."""

    def token(key):
        i = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[int(i)] if i is not None and 0 <= int(i) < len(tokens) else None

    spm = meta.get("tokenizer.ggml.model") == "llama"
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": token("bos"),
        "eos_token": token("eos"),
        "unk_token": token("unknown"),
        "pad_token": token("padding"),
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", spm)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
    }
    if meta.get("tokenizer.chat_template"):
        cfg["chat_template"] = meta["tokenizer.chat_template"]
    return {k: v for k, v in cfg.items() if v is not None}


def add_bos_processor(tok: Tokenizer, bos: str, bos_id: int) -> None:
    """Prepend BOS on encode, as llama.cpp does when ``add_bos_token`` is set."""
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
    )
