"""``cherry-mlx plan``: what merging and looping would give, from config.json alone.

The paper's planning tables (Table 8: frontier MoE models compressed to workstation experts;
Table 15: their NVFP4 footprints) are arithmetic on a model's shape, so this module counts
parameters analytically from the Hugging Face config (no weights are read or built, so a
744B-parameter config costs nothing) and applies the compression plan of ``compress``:

- merging N layers into K adjacent groups (the same groups ``compress --to`` uses) keeps each group
  as one layer; a group that mixes dense and MoE layers becomes an MoE layer, so a merged layer
  costs the largest layer of its group;
- looping the core adds no parameters but one KV cache per (layer, loop): KV memory follows the
  effective depth P + loops*C + Q;
- "active" parameters are those one token uses: shared weights, the routed experts it is sent to
  (``num_experts_per_tok``), the router, both embedding matrices (as DeepSeek-V3 and A.X K1 count
  them). Multi-token-prediction layers (``num_nextn_predict_layers``) are not counted, as vendors
  quote their totals without them.

Supported shapes: Llama-family dense attention (GQA, ``head_dim``, biases), multi-head latent
attention (``kv_lora_rank``: DeepSeek-V3, GLM-5, A.X K1, with the GLM-5 sparse-attention indexer
when ``index_n_heads`` is set), and dense, routed-expert and shared-expert MLPs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from cherry_mlx.compression.merge import balanced_groups, parse_depth
from cherry_mlx.compression.plan_check import check_plan_config
from cherry_mlx.compression.recurrent import Recurrence, current_recurrence, plan_recurrence
from cherry_mlx.models.info import FORMATS
from cherry_mlx.models.loading import load_config, resolve

KV_BITS = {"fp32": 32.0, "bf16": 16.0, "8-bit": FORMATS["8-bit"], "nvfp4": FORMATS["nvfp4"]}


@dataclass
class LayerCount:
    total: int  # parameters stored for the layer
    active: int  # parameters one token uses
    moe: bool


@dataclass
class Shape:
    """Parameter counts of one model, split the way merging acts on them."""

    layers: List[LayerCount]
    embed: int  # input embedding table
    head: int  # LM head (0 when tied)
    final_norm: int
    kv_per_layer: int  # cached values per token per attention call (K and V, or MLA latent)

    @property
    def outside(self) -> int:
        return self.embed + self.head + self.final_norm


@dataclass
class PlanRow:
    label: str
    unique: int
    effective_depth: int
    params: int
    active: int
    weight_bytes: Dict[str, float] = field(default_factory=dict)
    kv_bytes: Dict[str, float] = field(default_factory=dict)


def _text_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """Multimodal configs nest the language model under ``text_config``."""
    return dict(config.get("text_config") or config)


def _attention(c: Dict[str, Any]) -> Tuple[int, int]:
    """(parameters, cached values per token) of one attention block, norms included."""
    d, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
    if c.get("kv_lora_rank"):  # multi-head latent attention
        rank, q_rank = int(c["kv_lora_rank"]), c.get("q_lora_rank")
        nope, rope = int(c["qk_nope_head_dim"]), int(c["qk_rope_head_dim"])
        v = int(c["v_head_dim"])
        q = (
            d * q_rank + q_rank + q_rank * heads * (nope + rope)
            if q_rank
            else d * heads * (nope + rope)
        )
        kv = d * (rank + rope) + rank + rank * heads * (nope + v)
        n = q + kv + heads * v * d
        if c.get("index_n_heads"):  # sparse-attention indexer: wq_b, wk (+ its norm), weights
            ih, idim = int(c["index_n_heads"]), int(c["index_head_dim"])
            n += (q_rank or d) * ih * idim + d * idim + 2 * idim + d * ih
        return n + 2 * d, rank + rope  # + input/post-attention norms; MLA caches the latent
    kv_heads = int(c.get("num_key_value_heads") or heads)
    hd = int(c.get("head_dim") or d // heads)
    bias = bool(c.get("attention_bias", False))
    n = d * heads * hd + 2 * d * kv_heads * hd + heads * hd * d
    if bias:
        n += heads * hd + 2 * kv_heads * hd + d
    return n + 2 * d, 2 * kv_heads * hd


def _experts(c: Dict[str, Any]) -> int:
    return int(c.get("n_routed_experts") or c.get("num_local_experts") or c.get("num_experts") or 0)


def _is_moe(c: Dict[str, Any], i: int) -> bool:
    if not _experts(c):
        return False
    if i < int(c.get("first_k_dense_replace") or 0) or i in (c.get("mlp_only_layers") or []):
        return False
    step = int(c.get("moe_layer_freq") or c.get("decoder_sparse_step") or 1)
    return step <= 1 or (i + 1) % step == 0


def _mlp(c: Dict[str, Any], moe: bool) -> Tuple[int, int]:
    """(stored, active) parameters of one gated (SwiGLU) MLP block."""
    d = int(c["hidden_size"])
    if not moe:
        n = 3 * d * int(c["intermediate_size"])
        return n, n
    e, k = _experts(c), int(c.get("num_experts_per_tok") or 1)
    expert = 3 * d * int(c.get("moe_intermediate_size") or c["intermediate_size"])
    shared = int(c.get("n_shared_experts") or 0) * expert
    if c.get("shared_expert_intermediate_size"):
        shared = 3 * d * int(c["shared_expert_intermediate_size"]) + d  # + its sigmoid gate
    router = e * d + (e if c.get("topk_method") == "noaux_tc" else 0)  # + correction bias
    return e * expert + shared + router, k * expert + shared + router


def count_shape(config: Dict[str, Any]) -> Shape:
    """Analytic parameter counts of a Hugging Face config (no weights, nothing built)."""
    c = dict(check_plan_config(config))
    d, vocab = int(c["hidden_size"]), int(c["vocab_size"])
    attn, kv = _attention(c)
    layers = []
    for i in range(int(c["num_hidden_layers"])):
        moe = _is_moe(c, i)
        total, active = _mlp(c, moe)
        layers.append(LayerCount(attn + total, attn + active, moe))
    tied = bool(c.get("tie_word_embeddings", False))
    return Shape(layers, vocab * d, 0 if tied else vocab * d, d, kv)


def _weight_bytes(shape: Shape, layers: List[LayerCount]) -> Dict[str, float]:
    """Bytes of the stored weights per format; norms (vectors) stay 16-bit when quantised."""
    vectors = shape.final_norm + 2 * int(shape.final_norm) * len(layers)  # RMSNorm weights
    params = shape.outside + sum(layer.total for layer in layers)
    return {
        fmt: ((params - vectors) * bits + vectors * (bits if bits >= 16 else 16.0)) / 8
        for fmt, bits in FORMATS.items()
    }


def _row(label: str, shape: Shape, layers: List[LayerCount], rec: Recurrence, ctx: int) -> PlanRow:
    kv_values = shape.kv_per_layer * rec.effective_depth * ctx
    return PlanRow(
        label=label,
        unique=len(layers),
        effective_depth=rec.effective_depth,
        params=shape.outside + sum(layer.total for layer in layers),
        active=shape.outside + sum(layer.active for layer in layers),
        weight_bytes=_weight_bytes(shape, layers),
        kv_bytes={fmt: kv_values * bits / 8 for fmt, bits in KV_BITS.items()},
    )


def merged_layers(shape: Shape, unique: int) -> List[LayerCount]:
    """Counts after merging into ``unique`` balanced adjacent groups (largest layer per group)."""
    out = []
    for group in balanced_groups(len(shape.layers), unique):
        members = [shape.layers[i] for i in group]
        big = max(members, key=lambda layer: (layer.moe, layer.total))
        out.append(LayerCount(big.total, big.active, any(m.moe for m in members)))
    return out


def plan(
    config: Dict[str, Any],
    to: Optional[str] = None,
    loops: int = 1,
    prelude: int = 1,
    coda: int = 1,
    layout: Optional[str] = None,
    context: int = 4096,
) -> List[PlanRow]:
    """Rows for the source model and, with ``to``, its merged and looped versions."""
    shape = count_shape(config)
    n = len(shape.layers)
    src = current_recurrence(_text_config(config))  # a looped cherry model keeps its loops
    rows = [_row(f"source {n}L", shape, shape.layers, src, context)]
    if to is None:
        return rows
    k = parse_depth(to)
    if k > n:
        raise ValueError(f"--to {to} has more layers than the config's {n}; merging only shrinks")
    merged = merged_layers(shape, k)
    rows.append(_row(f"merged {k}L", shape, merged, Recurrence(0, k, 0, 1), context))
    rec = plan_recurrence(k, loops, prelude, coda, layout)
    if rec.loops > 1:
        rows.append(_row(rec.label(), shape, merged, rec, context))
    return rows


def load_plan_config(path: str) -> Dict[str, Any]:
    """A config.json file, a directory holding one (a downloaded hub snapshot), or a preset."""

    p = Path(path).expanduser()
    if p.is_file():
        try:
            return json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{p} is not valid JSON ({err}); point at a config.json") from None
    return load_config(resolve(path))


def _human(n: float, unit: str = "") -> str:
    for suffix, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def _gb(b: float) -> str:
    return f"{b / 1e9:,.3g} GB" if b >= 1e8 else f"{b / 1e6:,.3g} MB"


def format_plan(rows: List[PlanRow], quant: Optional[str] = None, context: int = 4096) -> str:
    """Markdown table: parameters, effective depth, weight memory and KV memory per format."""
    fmts = [quant] if quant else list(FORMATS)
    head = ["model", "unique", "eff. depth", "params", "active/token"]
    head += [f"weights {f}" for f in fmts] + [f"KV {f} @{context}" for f in fmts]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.label, str(r.unique), str(r.effective_depth), _human(r.params)]
        cells += [_human(r.active)]
        cells += [_gb(r.weight_bytes[f]) for f in fmts] + [_gb(r.kv_bytes[f]) for f in fmts]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "GB = 1e9 bytes; 8-bit and nvfp4 include their scales (8.5 and 4.5 bits per weight); "
        "KV for one sequence of the given length, one cache per (layer, loop)."
    )
    return "\n".join(lines)


def plan_command(cfg, log=print) -> List[PlanRow]:
    """``cherry-mlx plan``: print the rows for ``cfg`` (a ``PlanConfig``) as a table or JSON."""
    from dataclasses import asdict

    if cfg.quant is not None and cfg.quant not in FORMATS:
        raise ValueError(f"--quant {cfg.quant!r}: choose one of {', '.join(FORMATS)}")
    config = load_plan_config(cfg.config)
    check_plan_config(config, where=cfg.config)  # names the file; plan() checks again, unnamed
    rows = plan(
        config, to=cfg.to, loops=cfg.loops,
        prelude=1 if cfg.prelude is None else cfg.prelude,
        coda=1 if cfg.coda is None else cfg.coda, layout=cfg.layout, context=cfg.context,
    )  # fmt: skip
    if cfg.json_out:
        log(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        log(format_plan(rows, cfg.quant, cfg.context))
    return rows
