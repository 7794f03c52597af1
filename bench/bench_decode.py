"""Decode speed, side by side in one process (figures vary ~25% between processes: compare ratios).

    python bench/bench_decode.py [--layers 12 --hidden 512 --vocab 16384 --prompt 128 --gen 128]
    python bench/bench_decode.py --model runs/NAME   # a trained model with MTP heads

(a) our plain decode vs mlx-lm's ``generate_step`` on the same model and prompt (target >= 1.0x);
(b) self-speculative (MTP heads, K = 1..3) vs our plain decode, with the mean accepted length
    and each head's acceptance (given the earlier heads were accepted); rows with the reduced
    draft vocabulary (the model's ``mtp.draft_vocab``, or ``--draft-vocab N`` most frequent
    tokens of the bundled train split) and with adaptive drafting (the default of
    ``generate``/``chat``). Each repetition runs plain and every row back to back and the ratio is
    taken per repetition (median shown), so a machine whose load changes compares like with like.
    Random heads accept nothing, so without --model the trunk is made near-bigram and the heads
    copy it (tests/test_speculative.py's construction): acceptance is then high by design, and the
    figure shows the speedup *at that acceptance*, not a trained model's;
(c) NVFP4 (folded tensor scales) vs fp32: decode speed and weight memory;
(d) decode tok/s as a fraction of the memory-bandwidth bound (weight bytes read per token /
    measured copy bandwidth), and the GB/s one LM-head-sized matrix-vector product reaches in MLX
    and in numpy's gemv (how far the CPU backend's matmul is from the bound); on Linux each
    fp32 figure with the decode-shaped matmul path (``cherry_mlx._smallm.c``) on and off, with the
    cost of a verify pass over 2 / 3 / 4 tokens relative to one decode step.

    python bench/bench_decode.py --model runs/imported/smollm2-135m --sections acd
"""

# ruff: noqa: I001  (cherry_mlx must be imported before mlx)
from __future__ import annotations

import argparse
import importlib
import statistics
import time
from typing import Tuple

import cherry_mlx  # noqa: F401  (fast BLAS: must come before mlx)
import mlx.core as mx
from mlx.utils import tree_flatten

from cherry_mlx import _blas
from cherry_mlx.decoding.adaptive import AdaptiveDraft
from cherry_mlx.decoding.generate import GenerationStats, generate_tokens
from cherry_mlx.decoding.speculative import head_acceptance, speculative_generate_tokens
from cherry_mlx.models import build_model
from cherry_mlx.models.mtp import draft_vocab, set_draft_vocab


def bandwidth_gbs(n_bytes: int = 1 << 29) -> float:
    """Copy bandwidth into a preallocated buffer (read + write; best of 5, no page faults)."""
    import numpy as np

    a = np.ones(n_bytes // 4, dtype=np.float32)
    b = np.empty_like(a)
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(b, a)
        ts.append(time.perf_counter() - t)
    return 2 * n_bytes / min(ts) / 1e9


def matvec_gbs(rows: int, cols: int, reps: int = 20) -> Tuple[float, float]:
    """Weight-read GB/s of one (1, cols) @ (cols, rows) product, the decode step's only kind:
    MLX (what every decode here runs) and numpy's gemv on the same machine (a ceiling MLX's CPU
    backend could reach)."""
    import numpy as np

    w, x = mx.random.normal((rows, cols)), mx.random.normal((1, cols))
    mx.eval(w, x)
    mx.eval(x @ w.T)
    t = time.perf_counter()
    for _ in range(reps):
        mx.eval(x @ w.T)
    t_mx = (time.perf_counter() - t) / reps
    wn, xn = np.array(w), np.array(x)[0]
    wn @ xn
    t = time.perf_counter()
    for _ in range(reps):
        wn @ xn
    t_np = (time.perf_counter() - t) / reps
    return w.nbytes / t_mx / 1e9, w.nbytes / t_np / 1e9


def bytes_per_token(model) -> int:
    """Weight bytes a decode step reads: every parameter except the embedding table (one row),
    MTP heads excluded (plain decoding never reads them)."""
    total = 0
    for name, v in tree_flatten(model.parameters()):
        if name.startswith("mtp."):
            continue
        if "embed_tokens" in name and "lm_head" in model:
            continue  # untied: the embedding lookup reads one row
        total += v.nbytes
    return total


def ours(model, prompt, n, stop=()):
    """Plain decode tok/s; ``prompt`` may be a list of prompts (stats summed)."""
    st = GenerationStats()
    for p in prompt if isinstance(prompt[0], list) else [prompt]:
        for _ in generate_tokens(model, p, max_tokens=n, stats=st, stop=stop):
            pass
    return st.decode_tps


def spec(model, prompt, n, k, stop=(), adaptive=False):
    """Speculative decode: (tok/s, tokens per verify pass, per-head acceptance, share of tokens
    produced by verify rounds rather than plain steps)."""
    st = GenerationStats()
    if adaptive:  # one controller across the prompts, as a chat session keeps one
        adaptive = AdaptiveDraft(k or model.mtp.num_heads)
    for p in prompt if isinstance(prompt[0], list) else [prompt]:
        for _ in speculative_generate_tokens(
            model, p, max_tokens=n, stats=st, num_draft=k, stop=stop, adaptive=adaptive
        ):
            pass
    in_rounds = (st.accepted + st.rounds) / max(st.generated, 1)
    return st.decode_tps, st.mean_accepted, head_acceptance(st), in_rounds


def verify_cost(model, k, ctx=128, reps=40):
    """Seconds of one trunk pass over k+1 tokens (a verify) / one token (a decode step), both
    with a KV cache of ``ctx`` tokens, logits at every position: the verify's relative cost."""
    cache = model.make_cache()
    mx.eval(model.hidden(mx.zeros((1, ctx), dtype=mx.int32), cache=cache))

    def run(m):
        t = time.perf_counter()
        for _ in range(reps):
            mx.eval(model.logits(model.hidden(mx.zeros((1, m), dtype=mx.int32), cache=cache)))
            for c in cache:
                c.trim(m)
        return (time.perf_counter() - t) / reps

    run(1), run(k + 1)  # warm up
    one = statistics.median(run(1) for _ in range(3))
    return statistics.median(run(k + 1) for _ in range(3)) / one


def speculative_rows(model, prompts, n, reps, stop, reduced):
    """Plain vs fixed-K (full and reduced draft vocabulary) vs adaptive, ratio per repetition."""
    ids = draft_vocab(model.args.mtp)
    K = model.mtp.num_heads
    rows = [(f"K={k}", k, None, False) for k in range(1, K + 1)]
    if reduced:
        rows += [(f"K={k} draft vocab {len(ids)}", k, ids, False) for k in range(1, K + 1)]
    rows += [("adaptive (full vocab)", None, None, True)]
    if reduced:
        rows += [(f"adaptive, draft vocab {len(ids)}", None, ids, True)]
    ratios = {r[0]: [] for r in rows}
    last = {}
    base = []
    for _ in range(reps):
        b = ours(model, prompts, n, stop)
        base.append(b)
        for name, k, vocab, adaptive in rows:
            set_draft_vocab(model, vocab)
            last[name] = spec(model, prompts, n, k, stop, adaptive)
            ratios[name].append(last[name][0] / b)
    set_draft_vocab(model, ids)
    costs = ", ".join(f"K={k}: {verify_cost(model, k):.2f}x" for k in range(1, K + 1))
    print(f"    verify pass (K+1 tokens, one trunk call) vs one decode step: {costs}")
    print(f"    plain {statistics.median(base):.1f} tok/s (median of {reps})")
    for name, *_ in rows:
        tps, acc, heads, share = last[name]
        per_head = ", ".join(f"{a:.0%}" for a in heads)
        print(
            f"    {name}: {statistics.median(ratios[name]):.2f}x plain "
            f"(range {min(ratios[name]):.2f}-{max(ratios[name]):.2f}), {acc:.2f} tok/pass, "
            f"head acceptance [{per_head}], {share:.0%} of tokens from verify rounds"
        )


def data_prompts(model_name, count=8):
    """Chat prompts (turns before the first answer) of the bundled valid split, and the stop ids:
    acceptance is only meaningful on text the model was trained for."""
    from cherry_mlx.data.jsonl import read_jsonl
    from cherry_mlx.decoding.chat import render
    from cherry_mlx.models import load_tokenizer
    from cherry_mlx.training.data import default_data_dir

    tok = load_tokenizer(model_name)
    prompts = []
    for ex in read_jsonl(default_data_dir() / "valid.jsonl"):
        msgs = ex.get("messages") or []
        first = next((i for i, m in enumerate(msgs) if m["role"] == "assistant"), None)
        if first:
            prompts.append(render(tok, msgs[:first]))
        if len(prompts) == count:
            break
    return prompts, set(tok.eos_token_ids)


def mlx_lm_decode(model, prompt, n):
    gen_mod = importlib.import_module("mlx_lm.generate")  # the name resolves to a function
    it = gen_mod.generate_step(mx.array(prompt), model, max_tokens=n)
    next(it)  # first token = prefill
    t = time.perf_counter()
    k = 0
    for _ in it:
        k += 1
    return k / (time.perf_counter() - t)


def near_bigram(model, scale=0.01):
    for layer in model.layers:
        layer.self_attn.o_proj.weight = layer.self_attn.o_proj.weight * scale
        layer.mlp.down_proj.weight = layer.mlp.down_proj.weight * scale


def copy_heads(model):
    d = model.args.hidden_size
    for head in model.mtp.heads:
        head.proj.weight = mx.concatenate([mx.zeros((d, d)), mx.eye(d)], axis=1)
        head.block.self_attn.o_proj.weight = mx.zeros_like(head.block.self_attn.o_proj.weight)
        head.block.mlp.down_proj.weight = mx.zeros_like(head.block.mlp.down_proj.weight)
    mx.eval(model.parameters())


def med(f, reps):
    vals = [f() for _ in range(reps)]
    if isinstance(vals[0], tuple):
        return tuple(statistics.median(v[i] for v in vals) for i in range(len(vals[0])))
    return statistics.median(vals)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--model", default=None, help="trained model with MTP heads (acceptance)")
    ap.add_argument(
        "--draft-vocab",
        type=int,
        default=0,
        help="reduced draft vocabulary for --model: its N most frequent train-split tokens",
    )
    ap.add_argument("--sections", default="abcd", help="which of (a)-(d) to run, e.g. b")
    a = ap.parse_args()

    mx.random.seed(0)
    if a.model:
        from cherry_mlx.models import load_model

        model, cfg = load_model(a.model)
        synthetic = False
    else:
        cfg = dict(
            model_type="llama",
            hidden_size=a.hidden,
            num_hidden_layers=a.layers,
            intermediate_size=a.hidden * 11 // 4,
            num_attention_heads=a.hidden // 64,
            num_key_value_heads=a.hidden // 128,
            vocab_size=a.vocab,
            rms_norm_eps=1e-5,
            max_position_embeddings=4096,
            tie_word_embeddings=False,
            mtp={"num_heads": 3},
        )
        model = build_model(cfg)
        synthetic = True
    mx.eval(model.parameters())
    V = model.args.vocab_size
    prompt = [int(t) for t in mx.random.randint(0, V, (a.prompt,)).tolist()]
    n = a.gen
    nparams = sum(v.size for k, v in tree_flatten(model.parameters()) if not k.startswith("mtp."))
    print(
        f"model: {model.args.num_hidden_layers}L x {model.args.hidden_size}, vocab {V}, "
        f"{nparams / 1e6:.1f}M trunk params, fp32; prompt {a.prompt}, generate {n}"
    )

    # (a) ours vs mlx-lm, interleaved
    ours(model, prompt, 8), mlx_lm_decode(model, prompt, 8)  # warm up
    if "a" in a.sections:
        r_ours, r_mlx = [], []
        for _ in range(a.reps):
            r_ours.append(ours(model, prompt, n))
            r_mlx.append(mlx_lm_decode(model, prompt, n))
        t_ours, t_mlx = statistics.median(r_ours), statistics.median(r_mlx)
        print(f"(a) ours {t_ours:.1f} tok/s vs mlx-lm {t_mlx:.1f} tok/s: {t_ours / t_mlx:.2f}x")

    # (b) speculative
    stop = ()
    if synthetic:
        near_bigram(model)
        copy_heads(model)
        sprompt, note = prompt, " (near-bigram trunk, copy heads)"
    else:
        if getattr(model, "mtp", None) is None and "b" in a.sections:
            raise SystemExit(
                f"{a.model} has no MTP heads: train some (cherry-mlx train --model "
                f"{a.model} --mtp 3 --freeze-trunk)"
            )
        sprompt, stop = data_prompts(a.model) if "b" in a.sections else (prompt, ())
        note = f" ({len(sprompt)} held-out chat prompts, stop at end of turn)"
        if a.draft_vocab:
            from cherry_mlx.data.frequency import top_tokens
            from cherry_mlx.models import load_tokenizer
            from cherry_mlx.training.data import default_data_dir, load_split

            tok = load_tokenizer(a.model)
            train_split, _, _ = load_split(default_data_dir() / "train.jsonl", tok, 4096)
            set_draft_vocab(model, top_tokens(train_split, a.draft_vocab, V))
    if "b" in a.sections:
        print(f"(b) self-speculative vs plain{note}")
        reduced = draft_vocab(model.args.mtp) is not None
        speculative_rows(model, sprompt, n, a.reps, stop, reduced)
    if not set("cd") & set(a.sections):
        return

    # (c) NVFP4 vs fp32 (fresh random trunk so the quantised one is a normal network)
    from cherry_mlx.quant.quantize import quantize_model, weight_memory

    fp = build_model({k: v for k, v in cfg.items() if k != "quantization"}) if synthetic else model
    mx.eval(fp.parameters())
    mem_fp = weight_memory(fp)["bytes"]
    bpt_fp = bytes_per_token(fp)
    t_fp = med(lambda: ours(fp, prompt, n), a.reps)
    q, _ = quantize_model(fp, dict(cfg), "nvfp4")
    mem_q = weight_memory(q)["bytes"]
    bpt_q = bytes_per_token(q)
    t_q = med(lambda: ours(q, prompt, n), a.reps)
    print(
        f"(c) nvfp4 {t_q:.1f} tok/s vs fp32 {t_fp:.1f} tok/s: {t_q / t_fp:.2f}x speed; weights "
        f"{mem_q / 2**20:.1f} vs {mem_fp / 2**20:.1f} MiB ({mem_q / mem_fp:.2f}x)"
    )

    # (d) fraction of the bandwidth bound, and what one matrix-vector product reaches
    bw = bandwidth_gbs()
    g_mx, g_np = matvec_gbs(V, model.args.hidden_size)
    rows = [("fp32", t_fp, bpt_fp), ("nvfp4", t_q, bpt_q)]
    if _blas.use_small_gemm(False):  # the same products through OpenBLAS's sgemm only
        g_off = matvec_gbs(V, model.args.hidden_size)[0]
        t_off = med(lambda: ours(fp, prompt, n), a.reps)
        v_off = [verify_cost(fp, k, reps=10) for k in (1, 2, 3)]
        _blas.use_small_gemm(True)
        v_on = [verify_cost(fp, k, reps=10) for k in (1, 2, 3)]
        rows.insert(1, ("fp32, sgemm only", t_off, bpt_fp))
        print(
            f"(d) decode-shaped matmuls: plain fp32 decode {t_fp:.1f} tok/s vs {t_off:.1f} "
            f"with OpenBLAS's sgemm only ({t_fp / t_off:.2f}x); one matrix-vector product "
            f"{g_mx:.1f} vs {g_off:.1f} GB/s; a verify pass over 2/3/4 tokens costs "
            + "/".join(f"{v:.2f}" for v in v_on)
            + " decode steps (sgemm only: "
            + "/".join(f"{v:.2f}" for v in v_off)
            + ")"
        )
    print(
        f"(d) one {V}x{model.args.hidden_size} matrix-vector product: MLX {g_mx:.1f} GB/s, "
        f"numpy gemv {g_np:.1f} GB/s ({g_mx / bw:.0%} / {g_np / bw:.0%} of {bw:.1f} GB/s)"
    )
    for name, tps, bpt in rows:
        bound = bw * 1e9 / bpt
        print(
            f"(d) {name}: {bpt / 2**20:.1f} MiB read/token, bound {bound:.0f} tok/s at "
            f"{bw:.1f} GB/s; measured {tps:.1f} tok/s = {tps / bound:.1%} of the bound"
        )


if __name__ == "__main__":
    main()
