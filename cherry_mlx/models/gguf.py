"""GGUF (llama.cpp / Ollama / LM Studio) files in: a Hugging Face-layout folder out.

``import_gguf`` turns one ``.gguf`` into ``config.json``, ``model.safetensors``, ``tokenizer.json``,
``tokenizer_config.json`` (special tokens, chat template) and ``generation_config.json``, which
``transformers``, ``mlx_lm.load`` and every cherry-mlx command read. Tensors are read one at a time
from a memory map and dequantised in float32 (``gguf_quants``: the F, Q*_0/1, K and IQ4 types),
then stored in the requested dtype. llama.cpp's converter permutes the
Q/K rows of Llama-style models (interleaved rotary pairs, GPT-J style) and we permute them back to
the Hugging Face order (half-split, NeoX style); Qwen files are stored unpermuted.

Everything is validated before anything is written, and the folder is written under a temporary
name and renamed, so a bad file leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Dict, Optional

import mlx.core as mx
import numpy as np

from cherry_mlx.models.gguf_arch import (
    ARCHITECTURES,
    CHAT_TEMPLATES,
    NORM_SHIFTED,
    PERMUTED_QK,
    TOP,
    block_names,
    family_config,
)
from cherry_mlx.models.gguf_file import read_gguf
from cherry_mlx.models.gguf_packaged import PACKAGED, packaged_gguf
from cherry_mlx.models.gguf_stream import chunks, read_rows, write_safetensors
from cherry_mlx.models.gguf_tokenizer import add_bos_processor, build_tokenizer, tokenizer_config
from cherry_mlx.models.outputs import check_output, is_ours, staged_dir
from cherry_mlx.models.validate import check_finite_arrays, check_import

DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}
IMPORTED_DIR = Path(os.environ.get("CHERRY_MLX_RUNS", "runs")) / "imported"


def _f32(v) -> float:
    """A float32 metadata value as its shortest decimal (9.9999997e-06 -> 1e-05)."""
    return float(str(np.float32(v)))


def gguf_source(name: str | os.PathLike) -> Optional[Path]:
    """The .gguf file ``name`` refers to (a path or a short name), or None if it is neither."""
    text = str(name)
    if text in PACKAGED:
        return packaged_gguf(text)
    if text.lower().endswith(".gguf"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; pass an existing .gguf file")
        return path
    return None


def hf_config(meta: Dict[str, Any], shapes: Dict[str, tuple], path) -> Dict[str, Any]:
    """``config.json`` from ``{arch}.*`` metadata and the tensor shapes."""
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"{path}: architecture {arch!r} is not supported by cherry-mlx (supported: "
            f"{', '.join(ARCHITECTURES)}); use a GGUF of one of those families"
        )
    model_type, hf_arch = ARCHITECTURES[arch]

    def get(key, default=None):
        return meta.get(f"{arch}.{key}", default)

    for key in ("embedding_length", "attention.head_count", "block_count", "feed_forward_length"):
        if get(key) is None:
            raise ValueError(f"{path} lacks the {arch}.{key} metadata; re-export it with llama.cpp")
    hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
    vocab = shapes["token_embd.weight"][0]
    cfg = {
        "architectures": [hf_arch],
        "model_type": model_type,
        "hidden_size": hidden,
        "num_hidden_layers": int(get("block_count")),
        "intermediate_size": int(get("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(get("attention.head_count_kv", heads)),
        "head_dim": int(get("attention.key_length", hidden // heads)),
        "rms_norm_eps": _f32(get("attention.layer_norm_rms_epsilon", 1e-5)),
        "vocab_size": vocab,
        "max_position_embeddings": int(get("context_length", 2048)),
        "rope_theta": _f32(get("rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in shapes,
        "hidden_act": "silu",
        "attention_bias": "blk.0.attn_q.bias" in shapes and model_type != "qwen2",
        "mlp_bias": False,
    }
    if get("rope.scaling.type") == "linear":
        cfg["rope_scaling"] = {"rope_type": "linear", "factor": _f32(get("rope.scaling.factor"))}
    family_config(arch, get, cfg, shapes)
    for key, tok in (("bos_token_id", "bos"), ("eos_token_id", "eos")):
        if meta.get(f"tokenizer.ggml.{tok}_token_id") is not None:
            cfg[key] = int(meta[f"tokenizer.ggml.{tok}_token_id"])
    return cfg


def _hf_name(name: str, arch: str, path) -> str:
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", name)
    block = block_names(arch)
    if m and m.group(2) in block:
        return f"model.layers.{m.group(1)}.{block[m.group(2)]}.{m.group(3)}"
    m = re.fullmatch(r"(\w+)\.(weight|bias)", name)
    if m and m.group(1) in TOP:
        return f"{TOP[m.group(1)]}.{m.group(2)}"
    raise ValueError(f"{path}: unexpected tensor {name!r}; this GGUF layout is not supported")


def llama3_rope_scaling(factors: np.ndarray, theta: float, dims: int, path) -> Dict[str, Any]:
    """Llama 3's ``rope_scaling`` recovered from llama.cpp's per-frequency divisors (rope_freqs).

    The converter stores 1 for short wavelengths, ``factor`` for long ones and a smooth blend in
    between, without the parameters; we find the usual ones that reproduce the stored values.
    """
    wavelen = 2 * np.pi * theta ** (np.arange(0, dims, 2) / dims)  # (dims/2,)
    factor = float(factors.max())
    for ctx in (8192, 4096, 2048, 16384, 32768, 65536, 131072):
        for low, high in ((1.0, 4.0), (1.0, 2.0), (1.0, 8.0), (0.5, 4.0), (2.0, 8.0)):
            smooth = np.clip((ctx / wavelen - low) / (high - low), 0.0, 1.0)
            if np.allclose(1 / ((1 - smooth) / factor + smooth), factors, rtol=1e-3):
                return {
                    "rope_type": "llama3",
                    "factor": factor,
                    "low_freq_factor": low,
                    "high_freq_factor": high,
                    "original_max_position_embeddings": ctx,
                }
    raise ValueError(
        f"{path}: its RoPE frequency factors (rope_freqs) match no Llama 3 scaling we know; "
        "convert the original Hugging Face checkpoint instead"
    )


def _unpermute(w: mx.array, n_head: int) -> mx.array:  # (rows, cols) -> (rows, cols)
    """Undo llama.cpp's rotary row order: per head (hd/2, 2) interleaved -> (2, hd/2) halves."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def convert(path: Path, dtype: str = "float32"):
    """Validate everything and plan the tensors: ``(config, plan, tokenizer, tokenizer_config)``
    with ``plan`` a list of ``(tensor info, HF name, transform)`` that ``import_gguf`` decodes
    chunk by chunk (``gguf_stream``); nothing is decoded here."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    table, meta = read_gguf(path)  # refuses unknown types and truncated files by name
    shapes = {name: info.shape for name, info in table.items()}
    if "token_embd.weight" not in shapes:
        raise ValueError(f"{path} has no token_embd.weight tensor; it is not a language model")
    cfg = hf_config(meta, shapes, path)
    tok = build_tokenizer(meta, path)
    tokens = list(meta["tokenizer.ggml.tokens"])
    if len(tokens) > cfg["vocab_size"]:
        raise ValueError(
            f"{path}: the tokenizer has {len(tokens)} tokens but the model's vocabulary only "
            f"{cfg['vocab_size']} rows; the file is inconsistent, re-export it"
        )
    tok_cfg = tokenizer_config(meta, tokens)
    tok_cfg["model_max_length"] = cfg["max_position_embeddings"]
    _default_chat(meta, tokens, cfg, tok_cfg)
    if tok_cfg.get("add_bos_token") and "bos_token" in tok_cfg:
        add_bos_processor(tok, tok_cfg["bos_token"], cfg["bos_token_id"])
    arch = meta["general.architecture"]
    if "rope_freqs.weight" in table:  # Llama 3.1+ long-context RoPE
        with open(path, "rb") as f:
            factors = np.array(read_rows(f, table["rope_freqs.weight"], 0, 1))
        dims = int(meta.get(f"{arch}.rope.dimension_count", cfg["head_dim"]))
        cfg["rope_scaling"] = llama3_rope_scaling(factors, cfg["rope_theta"], dims, path)
    cfg["torch_dtype"] = dtype
    names = {name: _hf_name(name, arch, path) for name in table if name != "rope_freqs.weight"}
    check_import(cfg, {hf: shapes[name] for name, hf in names.items()}, str(path))
    heads = {"q": cfg["num_attention_heads"], "k": cfg["num_key_value_heads"]}
    plan = []  # (GGUF tensor, HF name, transform of a whole tensor or None)
    for name, hf in names.items():
        m = re.search(r"attn_(q|k)\.", name)
        transform = None
        if m and arch in PERMUTED_QK:
            transform = partial(_unpermute, n_head=heads[m.group(1)])
        elif arch in NORM_SHIFTED and name.endswith("norm.weight"):
            transform = _unshift
        plan.append((table[name], hf, transform))
    return cfg, plan, tok, tok_cfg


def _unshift(w: mx.array) -> mx.array:
    """Gemma's norms are stored as 1 + weight."""
    return w - 1.0


def _default_chat(meta, tokens, cfg, tok_cfg) -> None:
    """The family's chat template when the file has none; its end-of-turn token ends replies."""
    arch = meta["general.architecture"]
    if arch not in CHAT_TEMPLATES:
        return
    template, end_of_turn = CHAT_TEMPLATES[arch]
    tok_cfg.setdefault("chat_template", template)
    eot = meta.get("tokenizer.ggml.eot_token_id")
    if eot is None and end_of_turn in tokens:
        eot = tokens.index(end_of_turn)
    if eot is not None and "eos_token_id" in cfg and int(eot) != cfg["eos_token_id"]:
        cfg["eos_token_id"] = [cfg["eos_token_id"], int(eot)]


def converted(path: Path, dtype: str = "float32"):
    """``convert``, with any failure a damaged file can cause deep in a parser (struct, numpy,
    the tokenizers library) turned into one line naming the file."""
    try:
        return convert(path, dtype)
    except FileNotFoundError:
        raise
    except Exception as err:  # a damaged file reaches parsers' own errors: name the file
        text = (str(err).splitlines() or [""])[0][:160]
        if isinstance(err, ValueError) and str(path) in text:
            raise
        raise ValueError(
            f"{path}: its metadata or tensor table is damaged ({type(err).__name__}: {text}); "
            "download or export it again"
        ) from None


def _finite(parts, name: str, path: Path):
    """The chunks of tensor ``name``, each checked finite as it is written (a NaN or infinite
    weight would otherwise import with exit 0 and generate garbage)."""
    for w in parts:
        check_finite_arrays({name: w}, str(path))
        yield w


def import_gguf(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    dtype: str = "float32",
    force: bool = False,
) -> Path:
    """Write a Hugging Face-layout model folder for a GGUF file.

    ``out_dir`` follows the output policy (``outputs.check_output``): never the folder holding
    the GGUF or a run; a non-empty folder only with ``force``, and then only our files are
    replaced (a user's other files stay)."""
    path = gguf_source(path) or Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass a .gguf file or a short name")
    out_dir = Path(os.path.abspath(Path(out_dir).expanduser()))
    check_output(out_dir, [path], force)
    cfg, plan, tok, tok_cfg = converted(path, dtype)  # names and shapes checked, nothing written
    with staged_dir(out_dir) as tmp, open(path, "rb") as f:
        tensors = [
            (hf, info.shape, _finite(chunks(f, info, fn), hf, path)) for info, hf, fn in plan
        ]
        write_safetensors(tmp / "model.safetensors", tensors, DTYPES[dtype], {"format": "pt"})
        _write_json(tmp / "config.json", cfg)
        tok.save(str(tmp / "tokenizer.json"))
        _write_json(tmp / "tokenizer_config.json", tok_cfg)
        gen = {k: cfg[k] for k in ("bos_token_id", "eos_token_id") if k in cfg}
        _write_json(tmp / "generation_config.json", gen)
        _write_json(tmp / "gguf_source.json", {"file": str(path.resolve()), "dtype": dtype})
    return out_dir


def gguf_config(path: str | os.PathLike) -> Dict[str, Any]:
    """The ``config.json`` an import of ``path`` would write, computed without writing anything
    (the weights stay lazy and are never evaluated)."""
    return converted(Path(path))[0]


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def default_import_dir(source: str | os.PathLike) -> Path:
    """``runs/imported/<name>`` for a short name or a file's stem."""
    text = str(source)
    return IMPORTED_DIR / (text if text in PACKAGED else Path(text).stem)


def _cache_of(folder: Path, src: Path) -> bool:
    """``folder`` holds only our files and its stamp names ``src``."""
    try:
        stamp = json.loads((folder / "gguf_source.json").read_text())
    except (OSError, ValueError):
        return False
    return is_ours(folder) and isinstance(stamp, dict) and stamp.get("file") == str(src.resolve())


def cached_import(name: str | os.PathLike) -> Path:
    """A .gguf (or short name) converted once: beside the file if writable, else runs/imported.

    The folder is reused while its ``gguf_source.json`` names the same file and the file is not
    newer than the folder.
    """
    src = gguf_source(name)
    assert src is not None
    candidates = [default_import_dir(name)]
    if str(name) not in PACKAGED and os.access(src.parent, os.W_OK):
        candidates.insert(0, src.with_name(f"{src.stem}-hf"))
    # reuse or refresh only a folder this import wrote for this very file: never one holding a
    # user's files or another GGUF's import
    candidates = [c for c in candidates if not c.exists() or _cache_of(c, src)]
    if not candidates:
        raise ValueError(
            f"{default_import_dir(name)} exists and is not an import of {src}; move it "
            f"or run `cherry-mlx import {name} -o DIR` and pass DIR"
        )
    for out in candidates:
        stamp = out / "gguf_source.json"
        if stamp.is_file() and (out / "model.safetensors").is_file():
            if stamp.stat().st_mtime >= src.stat().st_mtime:
                return out
    started = time.time()
    out = import_gguf(src, candidates[0], force=True)
    if not os.environ.get("CHERRY_MLX_QUIET"):
        print(
            f"imported {src.name} -> {out} ({time.time() - started:.1f} s, reused next time)",
            file=sys.stderr,
        )
    return out


def import_command(cfg, log=print) -> Path:
    """``cherry-mlx import``: convert ``cfg.source`` into ``cfg.out`` (default
    ``runs/imported/NAME``), refusing a non-empty output folder without ``cfg.force``."""
    src = gguf_source(cfg.source)
    if src is None:
        raise ValueError(
            f"{cfg.source!r} is neither a .gguf file nor a known short name ({', '.join(PACKAGED)})"
        )
    out_dir = Path(cfg.out) if cfg.out else default_import_dir(cfg.source)
    started = time.time()
    out_dir = import_gguf(src, out_dir, dtype=cfg.dtype, force=cfg.force)
    log(f"imported {src.name} -> {out_dir} ({time.time() - started:.1f} s)")
    log(f"try: cherry-mlx chat {out_dir}")
    return out_dir
