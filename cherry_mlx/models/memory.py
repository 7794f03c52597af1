"""A memory plan for training and serving a model, from its config alone (nothing allocated).

What MLX allocates in one training step (the trainer's compiled ``value_and_grad`` + update) peaks
at one of two moments:

- the backward pass's start: weights W, optimizer state O, the activations every block call keeps
  (a few hidden-size and FFN-size vectors per token plus the attention probabilities, the (heads,
  T) row of every query; with gradient checkpointing only each call's input and part of the one
  block being recomputed) and several float32 vocabulary rows per supervised position (logits,
  log-softmax, their gradient), plus temporaries the size of the embedding matrix;
- the update: W, all gradients G, O and, for AdamW, the new weights and moments written beside the
  old ones inside the compiled step (7 x W in all); SGD's and Adafactor's new weights take the
  gradients' buffers, leaving the vocabulary-gradient temporaries (and Adafactor's, per untied
  LM head) as the largest extra.

The coefficients below were fitted to ``mx.get_peak_memory`` of real training steps
(``bench/bench_memory.py calibrate2``; ``docs/memory.md`` lists the fit and its residuals). A
looped core costs its unique weights once and its block calls' activations per call.
Serving: weights in the chosen format, the KV cache of every block call and one prefill chunk.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from mlx.utils import tree_flatten

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
OPTIMIZERS = ("adamw", "adafactor", "sgd")
GIB = 2**30

# Fitted to ``mx.get_peak_memory`` of real training steps on Llama shapes of SmolLM2's and
# cherry-1.8b's widths (``bench/bench_memory.py calibrate2``; docs/memory.md has the residuals).
# Per block call and token, in activation-dtype elements:
LAYER_D = 12.0  # hidden-size vectors kept for backward (norm in/out, q/k/v, RoPE, residuals)
LAYER_F = 3.0  # FFN-size vectors (gate, up, silu(gate)*up)
LAYER_ATT = 1.5  # per head and key: the attention probabilities (MLX's CPU attention keeps them)
CKPT_D = 1.0  # with checkpointing: the block call's saved input
CKPT_BLOCK = 0.6  # ... plus this share of one block's activations while it is recomputed
# Per supervised position, float32 vocabulary rows (logits, log-softmax, their gradient):
LOGIT_COPIES = 3.75  # at the start of the backward pass
LOGIT_COPIES_END = 1.35  # still alive while the update runs
# Transients of one embedding-sized matrix (V x D): the vocabulary gradients' temporaries
VOCAB_MATRICES = 2.2
ADAFACTOR_VOCAB = 1.65  # Adafactor's update temporaries, per untied LM head (measured)
FIXED = 24 * 2**20  # small buffers whatever the model (what tiny models show beyond the terms)
PREFILL_CHUNK = 512  # tokens per prefill step when serving (mlx-lm prefills in chunks)


@dataclass
class Shape:
    """What the plan needs to know of a model: parameter counts and the block geometry."""

    params: int  # all parameters
    trainable: int
    param_shapes: List[Tuple[int, ...]]  # trainable parameters' shapes (Adafactor's state)
    hidden: int
    ffn: int  # FFN width per token (x top-k for routed FFNs)
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    calls: int  # block calls per forward pass (effective depth, summed over MoEE experts)
    unique_layers: int
    mtp_heads: int = 0
    grad_calls: int = -1  # block calls whose activations the backward pass needs (-1: all)
    tied: bool = True
    vocab_trainable: bool = True  # the embedding / LM head get gradients (not under LoRA)
    components: Dict[str, int] = field(default_factory=dict)


def shape_of(model, mtp: int = 0) -> Shape:
    """The plan's ``Shape`` of a built (possibly lazy) model; ``mtp`` heads it will get."""
    from cherry_mlx.models.info import count_parameters

    args = model.args
    flat = tree_flatten(model.parameters())
    train = tree_flatten(model.trainable_parameters())
    experts = getattr(model, "experts", None)
    trunks = [e.args for e in experts] if experts else [args]
    calls = sum(len(a.schedule) for a in trunks)
    moee = getattr(args, "moee", None) or {}
    ffn = args.intermediate_size
    if moee.get("granularity") == "layer":
        ffn *= int(moee.get("top_k", 1))
    heads_have = int((args.mtp or {}).get("num_heads", 0))
    extra = max(int(mtp) - heads_have, 0)  # heads the run will add (one block each)
    per_head = 0
    if extra:
        from cherry_mlx.models.llama import Model, ModelArgs

        probe = Model(ModelArgs.from_dict({**_args_dict(args), "mtp": {"num_heads": 1}}))
        per_head = sum(a.size for _, a in tree_flatten(probe.mtp.parameters()))
    n_all = sum(a.size for _, a in flat) + extra * per_head
    n_train = sum(a.size for _, a in train) + extra * per_head
    shapes = [tuple(a.shape) for _, a in train]
    comps = dict(count_parameters(model))
    if extra:
        comps["mtp heads"] = comps.get("mtp heads", 0) + extra * per_head
    return Shape(
        params=n_all, trainable=n_train, param_shapes=shapes, hidden=args.hidden_size,
        ffn=ffn, heads=args.num_attention_heads,
        kv_heads=args.num_key_value_heads or args.num_attention_heads,
        head_dim=getattr(args, "head_dim", None) or args.hidden_size // args.num_attention_heads,
        vocab=args.vocab_size, calls=calls, unique_layers=len(model.layers),
        mtp_heads=max(int(mtp), heads_have), components=comps,
        tied=bool(args.tie_word_embeddings),
        vocab_trainable=any("embed_tokens" in k or k.startswith("lm_head") for k, _ in train),
    )  # fmt: skip


def _args_dict(args) -> Dict[str, Any]:
    from dataclasses import asdict

    d = asdict(args)
    d.pop("moee", None)
    return d


def config_shape(config: Dict[str, Any], mtp: int = 0, lora: bool = False, lora_rank: int = 8,
                 lora_layers: int = -1) -> Shape:  # fmt: skip
    """``shape_of`` a model built lazily from ``config`` (LoRA adapters applied the way ``train
    --lora`` applies them: every linear layer of the last ``lora_layers`` blocks)."""
    from cherry_mlx.models.loading import build_model

    model = build_model(dict(config))
    if lora:
        from mlx_lm.tuner.utils import linear_to_lora_layers

        model.freeze()
        n = len(model.layers) if lora_layers < 0 else min(lora_layers, len(model.layers))
        linear_to_lora_layers(model, n, {"rank": lora_rank, "scale": 20.0, "dropout": 0.0})
    s = shape_of(model, mtp)
    if lora and 0 <= lora_layers < s.unique_layers:
        # only block calls from the first adapted layer on need their activations kept
        s.grad_calls = max(1, round(s.calls * lora_layers / s.unique_layers))
    return s


def device_kind(device: str = "auto") -> str:
    """``cpu`` or ``gpu`` (Metal or CUDA); ``auto`` asks MLX which it would use."""
    if device != "auto":
        return device
    import mlx.core as mx

    return "cpu" if mx.default_device() == mx.cpu else "gpu"


def precision(dtype: str, device: str) -> Tuple[str, str]:
    """(weight dtype, sentence): float32 on CPU (bf16 matmuls are slow there), bf16 weights and
    gradients with float32 optimizer state on Metal/CUDA."""
    if dtype == "auto":
        dtype = "float32" if device == "cpu" else "bfloat16"
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"--dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    if dtype == "float32":
        return dtype, "float32 weights, gradients, optimizer state and activations"
    return dtype, f"{dtype} weights, gradients and activations; float32 optimizer state"


def optimizer_state_bytes(s: Shape, optimizer: str) -> float:
    """Float32 state: AdamW two moments per weight; Adafactor (no first moment) a row and a
    column vector per matrix, a full vector per vector; SGD (no momentum) nothing."""
    if optimizer == "adamw":
        return 2 * 4 * s.trainable
    if optimizer == "adafactor":
        n = 0
        for shp in s.param_shapes:
            if len(shp) >= 2:
                rows = 1
                for d in shp[:-1]:
                    rows *= d
                n += rows + shp[-1]
            else:
                n += shp[0] if shp else 1
        return 4 * n
    if optimizer == "sgd":
        return 0.0
    raise ValueError(f"--optimizer {optimizer!r}: use one of {', '.join(OPTIMIZERS)}")


def layer_activation(s: Shape, tokens: int, seq: int, nbytes: int) -> float:
    """Bytes one block call keeps for the backward pass over ``tokens`` tokens of length ``seq``."""
    per_tok = LAYER_D * s.hidden + LAYER_F * s.ffn + LAYER_ATT * s.heads * seq
    return tokens * per_tok * nbytes


def activation_bytes(s: Shape, batch: int, seq: int, checkpoint: bool, nbytes: int) -> float:
    """Activations held at the backward pass's start (block calls, MTP heads, logits)."""
    tokens = batch * seq
    calls = (s.calls if s.grad_calls < 0 else s.grad_calls) + s.mtp_heads
    one = layer_activation(s, tokens, seq, nbytes)
    if checkpoint:  # saved inputs + one block recomputed at a time
        blocks = calls * CKPT_D * tokens * s.hidden * nbytes + CKPT_BLOCK * one
    else:
        blocks = calls * one
    logits = LOGIT_COPIES * tokens * s.vocab * 4 * (1 + s.mtp_heads)
    return blocks + logits


@dataclass
class Plan:
    """Rows of bytes (name -> bytes), the predicted peak and notes, for printing or JSON."""

    kind: str  # train | serve
    rows: "OrderedDict[str, float]"
    peak: float
    notes: List[str]
    settings: Dict[str, Any]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "kind": self.kind, "rows_bytes": dict(self.rows), "peak_bytes": self.peak,
            "peak_gib": self.peak / GIB, "notes": self.notes, "settings": self.settings,
        }  # fmt: skip


def plan_training(
    s: Shape, batch: int = 8, seq: int = 256, checkpoint: bool = False,
    optimizer: str = "adamw", dtype: str = "auto", device: str = "auto",
) -> Plan:  # fmt: skip
    """Predicted peak of MLX's allocation over a training step at full-length batches."""
    dev = device_kind(device)
    dt, prec = precision(dtype, dev)
    nb = DTYPE_BYTES[dt]
    rows: "OrderedDict[str, float]" = OrderedDict()
    rows["weights"] = s.params * nb
    rows["gradients"] = s.trainable * nb
    rows["optimizer state"] = optimizer_state_bytes(s, optimizer)
    # the compiled update writes new weights and state beside the old ones
    # AdamW's compiled update writes new weights and moments beside the old ones; SGD's and
    # Adafactor's new weights take the gradients' buffers (measured: 7 x W vs 2 x W + transients)
    rows["update (new weights + state)"] = (
        s.trainable * nb + rows["optimizer state"] if optimizer == "adamw" else 0.0
    )
    vocab = s.vocab * s.hidden * nb  # one embedding-sized matrix
    rows["vocabulary-gradient transients"] = VOCAB_MATRICES * vocab if s.vocab_trainable else 0.0
    if optimizer == "adafactor" and s.vocab_trainable:
        rows["vocabulary-gradient transients"] += ADAFACTOR_VOCAB * vocab * (not s.tied)
    rows["activations"] = activation_bytes(s, batch, seq, checkpoint, nb)
    end_logits = LOGIT_COPIES_END * batch * seq * s.vocab * 4
    # two moments of the step: the backward pass's start (activations and logits alive, no
    # gradients yet) and the update (all gradients, the new weights and state, no activations)
    start = rows["weights"] + rows["optimizer state"] + rows["activations"]
    start += VOCAB_MATRICES * vocab if s.vocab_trainable else 0.0
    # AdamW's new moments and the vocabulary transients do not coincide (measured): the larger
    end = rows["weights"] + rows["gradients"] + rows["optimizer state"] + end_logits
    end += max(rows["update (new weights + state)"], rows["vocabulary-gradient transients"])
    peak = max(start, end) + FIXED
    notes = [f"precision ({dev}): {prec}",
             f"peak at the {'backward pass start' if start >= end else 'update'}"]  # fmt: skip
    if checkpoint:
        notes.append("gradient checkpointing: each block call keeps its input only")
    return Plan(
        "train", rows, peak, notes,
        dict(batch_size=batch, seq_len=seq, grad_checkpoint=checkpoint, optimizer=optimizer,
             dtype=dt, device=dev),
    )  # fmt: skip


def weight_bytes_in(s: Shape, fmt: str) -> float:
    """Weights stored as ``fmt`` (fp32 / bf16 / 8-bit / nvfp4; quantised: matrices only)."""
    from cherry_mlx.models.info import FORMATS

    if fmt not in FORMATS:
        raise ValueError(f"--quant {fmt!r}: use one of {', '.join(FORMATS)}")
    bits = FORMATS[fmt]
    total = 0.0
    for shp in s.param_shapes or []:
        n = 1
        for d in shp:
            n *= d
        total += n * (bits if (len(shp) >= 2 or fmt in ("fp32", "bf16")) else 16.0) / 8
    return total


def plan_serving(s: Shape, batch: int = 1, context: int = 4096, fmt: str = "bf16",
                 kv_dtype: str = "auto", device: str = "auto") -> Plan:  # fmt: skip
    """Predicted peak of generation: weights, KV cache of every block call at ``context``
    tokens, and one prefill chunk's attention and the last position's logits."""
    dev = device_kind(device)
    note = f"weights {fmt}"
    if dev == "cpu" and fmt == "bf16":  # the CPU serves bf16 checkpoints in fp32 (faster there)
        fmt, note = "fp32", "weights bf16 on disk, served as fp32 on the CPU"
    if kv_dtype == "auto":
        kv_dtype = "float32" if fmt == "fp32" or dev == "cpu" else "bfloat16"
    kb = DTYPE_BYTES[kv_dtype]
    rows: "OrderedDict[str, float]" = OrderedDict()
    rows["weights"] = weight_bytes_in(s, fmt)
    calls = s.calls + s.mtp_heads
    rows["KV cache"] = 2 * calls * s.kv_heads * s.head_dim * context * batch * kb
    chunk = min(PREFILL_CHUNK, context)
    rows["prefill"] = batch * chunk * (
        LAYER_ATT * s.heads * context + LAYER_D * s.hidden + LAYER_F * s.ffn
    ) * kb + batch * s.vocab * 4  # fmt: skip
    peak = sum(rows.values())
    return Plan(
        "serve", rows, peak, [f"{note}, KV cache {kv_dtype} ({dev})"],
        dict(batch_size=batch, context=context, quant=fmt, device=dev),
    )  # fmt: skip


def available_bytes() -> Optional[float]:
    """Memory this process could use now (Linux ``MemAvailable``; else physical memory)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None
