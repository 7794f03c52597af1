"""Property-based fuzzing of three more surfaces that read user input: ``import`` (GGUF files with
mutated headers and tensor tables), ``plan`` (config dictionaries) and ``quantize --keep``.

The property, as in ``test_fuzz.py``: success, or the project's one-line error (``ValueError`` /
``FileNotFoundError``, one non-empty line); never another exception. Beyond it, each surface's
own promise: a failed import writes nothing (no folder, no hidden temporary) and leaves the GGUF
untouched; a plan's numbers are finite, non-negative and active <= total; an accepted ``--keep``
changes the format only of the layers it names."""

import math
import sys
from pathlib import Path

import pytest
from fuzzing import FUZZ, outcome
from hypothesis import event, given, settings
from hypothesis import strategies as st

one_line_or_success = outcome  # (result, None) or (None, one-line error)


# -- import: mutated GGUF headers and tensor tables ------------------------------------------------
gguf = pytest.importorskip("gguf")
sys.path.insert(0, str(Path(__file__).parent / "reliability"))
from gguf_fixtures import base  # noqa: E402


@pytest.fixture(scope="module")
def good_gguf(tmp_path_factory):
    path = base(tmp_path_factory.mktemp("fuzz-gguf") / "good.gguf")
    reader = gguf.GGUFReader(str(path))
    table = min(t.field.offset for t in reader.tensors)  # where the tensor table starts
    return path, table, reader.data_offset  # ... and ends (the weights follow)


mutation = st.one_of(
    st.tuples(st.just("byte"), st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
    st.tuples(st.just("u32"), st.floats(0, 1, exclude_max=True),
              st.sampled_from([0, 1, 2, 3, 4, 99, 2**31, 2**32 - 1])),
    st.tuples(st.just("u64"), st.floats(0, 1, exclude_max=True),
              st.sampled_from([0, 1, 7, 2**20, 2**40, 2**63, 2**64 - 1])),
    st.tuples(st.just("cut"), st.floats(0, 1, exclude_max=True), st.just(0)),
)  # fmt: skip


def _mutate(data: bytes, table: int, header_end: int, in_table: bool, mutations) -> bytes:
    """Each mutation lands in the tensor table (``in_table``) or anywhere in the header and
    metadata before it; the weights after them are data, not structure."""
    out = bytearray(data)
    lo, hi = (table, header_end) if in_table else (0, table)
    for kind, where, value in mutations:
        at = min(lo + int(where * (hi - lo)), len(out) - 8)
        if kind == "byte":
            out[at] = value
        elif kind == "u32":
            out[at : at + 4] = value.to_bytes(4, "little")
        elif kind == "u64":
            out[at : at + 8] = value.to_bytes(8, "little")
        else:
            del out[max(at, 1) :]
    return bytes(out)


@settings(max_examples=100, **FUZZ)
@given(mutations=st.lists(mutation, min_size=1, max_size=3), in_table=st.booleans())
def test_fuzz_import_of_mutated_gguf(good_gguf, tmp_path_factory, mutations, in_table):
    from cherry_mlx.models.gguf import import_gguf

    good, table, header_end = good_gguf
    tmp = tmp_path_factory.mktemp("imp")
    src = tmp / "m.gguf"
    src.write_bytes(_mutate(good.read_bytes(), table, header_end, in_table, mutations))
    before = src.read_bytes()
    out, err = one_line_or_success(import_gguf, src, tmp / "out")
    assert src.read_bytes() == before  # the source is never written
    event("refused" if err is not None else "imported")
    if err is not None:
        assert sorted(p.name for p in tmp.iterdir()) == ["m.gguf"]  # nothing left behind
    else:
        assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()


# -- plan: config dictionaries ---------------------------------------------------------------------
PLAN_BASE = dict(hidden_size=128, num_hidden_layers=4, vocab_size=1000, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=256)  # fmt: skip
PLAN_KEYS = [
    *PLAN_BASE, "head_dim", "attention_bias", "tie_word_embeddings", "moe_intermediate_size",
    "num_local_experts", "n_routed_experts", "num_experts", "num_experts_per_tok",
    "n_shared_experts", "shared_expert_intermediate_size", "first_k_dense_replace",
    "mlp_only_layers", "moe_layer_freq", "decoder_sparse_step", "topk_method", "kv_lora_rank",
    "q_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_n_heads",
    "index_head_dim", "recurrence", "text_config",
]  # fmt: skip
plan_values = st.one_of(
    st.integers(-3, 300),
    st.sampled_from([0, 1, 2, 8, 64, 2**31, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.lists(st.integers(-2, 5), max_size=3),
    st.sampled_from(["noaux_tc", {"prelude": 1, "core": 2, "coda": 1, "loops": 2}, {}]),
)
sensible = st.integers(0, 16) | st.sampled_from([64, 128, 256]) | st.lists(st.integers(0, 3))
near_valid = st.dictionaries(st.sampled_from(PLAN_KEYS), sensible, max_size=4).map(
    lambda d: {**PLAN_BASE, **d}
)
plan_configs = st.one_of(
    near_valid,
    near_valid,
    near_valid,
    st.dictionaries(st.sampled_from(PLAN_KEYS), plan_values, max_size=6).map(
        lambda d: {**PLAN_BASE, **d}
    ),
    st.dictionaries(st.sampled_from(PLAN_KEYS), plan_values, max_size=8),
    st.lists(st.integers(), max_size=2) | st.none() | st.integers() | st.text(max_size=3),
)


@settings(max_examples=300, **FUZZ)
@given(
    config=plan_configs,
    to=st.none() | st.sampled_from(["1L", "2L", "3", "4L", "9L", "0L", "x"]),
    loops=st.integers(1, 4),
    context=st.integers(1, 10**6),
)
def test_fuzz_plan_of_config_dictionaries(config, to, loops, context):
    from cherry_mlx.compression.plan import format_plan, plan

    rows, _ = one_line_or_success(plan, config, to=to, loops=loops, context=context)
    event("refused" if rows is None else "planned")
    if rows is None:
        return
    for r in rows:
        numbers = [r.params, r.active, *r.weight_bytes.values(), *r.kv_bytes.values()]
        assert all(math.isfinite(x) and x >= 0 for x in numbers), r
        assert r.active <= r.params and r.effective_depth >= r.unique >= 1
    assert format_plan(rows, context=context)


@settings(max_examples=100, **FUZZ)
@given(
    layers=st.integers(1, 12),
    heads=st.sampled_from([1, 2, 4, 8]),
    experts=st.integers(0, 16),
    top_k=st.integers(1, 16),
    dense_first=st.integers(0, 3),
    shared=st.integers(0, 2),
    to=st.integers(1, 12),
    loops=st.integers(1, 4),
)
def test_fuzz_plan_of_valid_shapes_keeps_its_invariants(
    layers, heads, experts, top_k, dense_first, shared, to, loops
):
    """Any buildable shape plans: active <= total, merging never adds parameters, looping adds
    none but multiplies the KV cache by the effective depth."""
    from cherry_mlx.compression.plan import plan

    cfg = dict(PLAN_BASE, num_hidden_layers=layers, num_attention_heads=heads,
               num_key_value_heads=heads)  # fmt: skip
    if experts:
        cfg.update(num_local_experts=experts, num_experts_per_tok=min(top_k, experts),
                   moe_intermediate_size=32, first_k_dense_replace=dense_first,
                   n_shared_experts=shared)  # fmt: skip
    to = min(to, layers)
    loops = loops if to >= 3 else 1
    rows = plan(cfg, to=f"{to}L", loops=loops)
    src, merged = rows[0], rows[1]
    assert all(0 < r.active <= r.params for r in rows)
    assert merged.params <= src.params and merged.unique == to
    if loops > 1:
        looped = rows[2]
        assert looped.params == merged.params and looped.effective_depth == to + (loops - 1) * (
            to - 2
        )
        ratio = looped.kv_bytes["bf16"] / merged.kv_bytes["bf16"]
        assert ratio == pytest.approx(looped.effective_depth / to)


# -- quantize --keep -------------------------------------------------------------------------------
KEEP_WORDS = ["embed", "lm_head", "attn", "mlp", "gate", "mtp", "layers.0.", "layers.1.", "q_proj",
              "auto", "", " ", "nope", "layers."]  # fmt: skip
KEEP_MODES = ["", ":nvfp4", ":mxfp4", ":affine4", ":affine8", ":affine5", ":", ":5.5", ":nan"]
keep_item = st.tuples(st.sampled_from(KEEP_WORDS), st.sampled_from(KEEP_MODES)).map("".join)
keep_text = st.lists(keep_item, min_size=1, max_size=4).map(",".join) | st.text(
    st.sampled_from("embd:,. a8_"), max_size=12
)


@pytest.fixture(scope="module")
def keep_model():
    import mlx.core as mx

    from cherry_mlx.models import build_model

    cfg = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=256, tie_word_embeddings=True,
               rms_norm_eps=1e-5, rope_theta=10000.0, model_type="llama")  # fmt: skip
    model = build_model(cfg)
    mx.eval(model.parameters())
    return cfg, dict(__import__("mlx.utils", fromlist=["x"]).tree_flatten(model.parameters()))


@settings(max_examples=60, **FUZZ)
@given(keep=keep_text)
def test_fuzz_quantize_keep(keep_model, keep):
    """An accepted --keep quantises every layer it does not name in --mode (nvfp4) and each
    ``NAME:MODE`` layer in that mode: no item silently changes layers it does not name."""
    from cherry_mlx.models import build_model
    from cherry_mlx.pipelines.quantize_config import QuantizeConfig
    from cherry_mlx.quant.quantize import KEEP_ALIASES, parse_keep, quantize_model

    cfg, weights = keep_model
    qcfg, err = one_line_or_success(QuantizeConfig, model="m", keep=keep)
    event("refused by the settings" if err is not None else "accepted by the settings")
    if err is not None:
        return
    model = build_model(cfg)
    model.load_weights(list(weights.items()))
    items = parse_keep(keep)
    result, err = one_line_or_success(quantize_model, model, dict(cfg), "nvfp4", items)
    event("refused by quantize_model" if err is not None else "quantised")
    if err is not None:
        return
    qmodel, _ = result

    def named(path, name):
        return KEEP_ALIASES.get(name, lambda p: name in p)(path)

    plain = [k for k in items if ":" not in k]
    other = {k.split(":")[0]: k.split(":")[1] for k in items if ":" in k}
    if "lm_head" in plain:  # a tied head is the embedding
        plain.append("embed")
    if "lm_head" in other:
        other.setdefault("embed", other["lm_head"])
    for path, module in qmodel.named_modules():
        if not hasattr(module, "weight") or module.weight.ndim != 2:
            continue
        mode = getattr(module, "mode", None) if hasattr(module, "scales") else None
        by_mode = [m for n, m in other.items() if named(path, n)]
        if by_mode:
            assert mode == {"affine4": "affine", "affine8": "affine"}.get(by_mode[0], by_mode[0])
        elif any(named(path, n) for n in plain):
            assert mode is None, (path, keep)  # kept in full precision
        else:
            assert mode == "nvfp4", (path, keep, mode)  # untouched by --keep: --mode
