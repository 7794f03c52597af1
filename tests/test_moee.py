"""MoEE: gate maths vs numpy, reduction to one expert, balance loss, save/load/generate."""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from cherry_mlx.fusion.assemble import assemble, set_trainable
from cherry_mlx.fusion.objective import MoEEObjective, make_loss
from cherry_mlx.models.gate import balance_loss, dense_weights, topk_gate
from cherry_mlx.models.loading import build_model, load_model, save_model


def _expert(cfg, seed):
    mx.random.seed(seed)
    m = build_model(cfg)
    mx.eval(m.parameters())
    return m


def _batch(vocab, B=2, T=12, seed=0):
    rng = np.random.default_rng(seed)
    toks = rng.integers(0, vocab, size=(B, T + 1))
    resp = np.zeros((B, T), bool)
    resp[:, 3:] = True
    level = (rng.random((B, T)) < 0.3).astype(np.int8) * resp
    cat = np.where(level > 0, rng.integers(0, 6, size=(B, T)), -1).astype(np.int8)
    return {
        "inputs": mx.array(toks[:, :-1], dtype=mx.int32),
        "targets": mx.array(toks[:, 1:], dtype=mx.int32),
        "response": mx.array(resp),
        "level": mx.array(level),
        "category": mx.array(cat),
    }


def test_topk_gate_matches_numpy_and_sums_to_one():
    logits = mx.random.normal((3, 5, 4))
    for k in (1, 2, 3):
        probs, inds, w = topk_gate(logits, k)
        x = np.array(logits, dtype=np.float64)
        p = np.exp(x - x.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        np.testing.assert_allclose(np.array(probs), p, atol=1e-6)
        top = np.sort(p, axis=-1)[..., ::-1][..., :k]  # k largest probabilities
        ref = top / top.sum(-1, keepdims=True)  # Eq. 10's renormalised ĝ
        got = np.take_along_axis(np.array(probs), np.array(inds), -1)
        np.testing.assert_allclose(np.sort(got, -1)[..., ::-1], top, atol=1e-6)
        np.testing.assert_allclose(np.sort(np.array(w), -1)[..., ::-1], ref, atol=1e-6)
        np.testing.assert_allclose(np.array(w).sum(-1), 1.0, atol=1e-6)
        dense = np.array(dense_weights(inds, w, 4))
        np.testing.assert_allclose(dense.sum(-1), 1.0, atol=1e-6)
        assert ((dense > 0).sum(-1) == k).all()


def test_balance_loss_formula_and_uniform_minimum():
    rng = np.random.default_rng(0)
    n, alpha = 4, 0.05
    logits = mx.array(rng.normal(size=(64, n)) * 2, dtype=mx.float32)
    probs, inds, _ = topk_gate(logits, 1)
    p = np.array(probs)
    f = np.bincount(np.array(inds)[:, 0], minlength=n) / 64
    ref = alpha * n * (f * p.mean(0)).sum()  # Switch Transformer: α·N·Σ f_i·P_i
    assert float(balance_loss(probs, inds, alpha=alpha)) == pytest.approx(ref, rel=1e-5)
    # uniform routing (each expert gets a quarter of the tokens with equal probability) gives α
    uni_p = mx.full((64, n), 1.0 / n)
    uni_i = mx.array(np.arange(64) % n, dtype=mx.int32)[:, None]
    assert float(balance_loss(uni_p, uni_i, alpha=alpha)) == pytest.approx(alpha, rel=1e-6)
    # as routing collapses onto one expert the loss rises monotonically from α towards α·N
    noise = np.random.default_rng(1).normal(size=(64, n))
    seen = []
    for s in (0.0, 1.0, 2.0, 4.0, 8.0):
        lg = mx.array(noise * 0.01 + s * (np.arange(n) == 0), dtype=mx.float32)
        seen.append(float(balance_loss(*topk_gate(lg, 1)[:2], alpha=alpha)))
    assert seen[0] == pytest.approx(alpha, rel=0.05) and np.all(np.diff(seen) > 0)
    assert seen[-1] == pytest.approx(alpha * n, rel=0.01)
    # the mask restricts it to the given positions
    mask = mx.array(np.arange(64) < 32)
    f2 = np.bincount(np.array(inds)[:32, 0], minlength=n) / 32
    ref2 = alpha * n * (f2 * p[:32].mean(0)).sum()
    assert float(balance_loss(probs, inds, mask, alpha)) == pytest.approx(ref2, rel=1e-5)


@pytest.mark.parametrize("granularity,shared", [("model", True), ("model", False), ("layer", True)])
def test_one_expert_top1_equals_the_expert(tiny_config, granularity, shared):
    cfg = dict(tiny_config, recurrence={"prelude": 0, "core": 2, "coda": 0, "loops": 2})
    e = _expert(cfg, 1)
    fused, fcfg = assemble([e], [cfg], granularity, top_k=1, shared=shared)
    x = mx.array(np.random.default_rng(0).integers(0, 256, size=(2, 10)), dtype=mx.int32)
    np.testing.assert_allclose(np.array(fused(x)), np.array(e(x)), atol=1e-4)
    assert fcfg["moee"]["granularity"] == granularity


def test_two_experts_mix_logits_and_cache_matches_full_pass(tiny_config):
    a, b = _expert(tiny_config, 1), _expert(tiny_config, 2)
    fused, _ = assemble([a, b], [tiny_config] * 2, "model", top_k=2, shared=False)
    x = mx.array(np.random.default_rng(1).integers(0, 256, size=(1, 9)), dtype=mx.int32)
    h, aux = fused.route(x)
    probs = np.array(aux[0][0])  # (1, 9, 2), k = N: weights are the full softmax
    ref = probs[..., :1] * np.array(a(x)) + probs[..., 1:] * np.array(b(x))
    np.testing.assert_allclose(np.array(fused.logits(h)), ref, atol=1e-4)
    # incremental decoding through the concatenated caches equals the full pass
    cache = fused.make_cache()
    steps = [fused(x[:, :5], cache=cache)[:, -1]] + [
        fused(x[:, i : i + 1], cache=cache)[:, -1] for i in range(5, 9)
    ]
    full = np.array(fused(x))[0, 4:]
    np.testing.assert_allclose(np.concatenate([np.array(s) for s in steps]), full, atol=1e-4)


def test_layer_moee_routes_to_expert_ffns(tiny_config):
    a, b = _expert(tiny_config, 1), _expert(tiny_config, 2)
    fused, _ = assemble([a, b], [tiny_config] * 2, "layer", top_k=1)
    # attention is the experts' mean, expert 1's FFN is b's FFN
    np.testing.assert_allclose(
        np.array(fused.model.layers[0].self_attn.q_proj.weight),
        (
            np.array(a.model.layers[0].self_attn.q_proj.weight)
            + np.array(b.model.layers[0].self_attn.q_proj.weight)
        )
        / 2,
        atol=1e-6,
    )
    x = mx.random.normal((1, 3, 64))
    mlp = fused.model.layers[0].mlp
    mlp.gate.proj.weight = mx.zeros_like(mlp.gate.proj.weight).at[1].add(100.0 * x[0, 0])
    y = mlp(x[:, :1])
    np.testing.assert_allclose(np.array(y), np.array(b.model.layers[0].mlp(x[:, :1])), atol=1e-4)
    h, aux = fused.route(mx.array([[1, 2, 3]]))
    assert len(aux) == tiny_config["num_hidden_layers"] and h.shape == (1, 3, 64)


def test_fused_model_trains_gate_only_and_balance_term(tiny_config):
    a, b = _expert(tiny_config, 1), _expert(tiny_config, 2)
    fused, _ = assemble([a, b], [tiny_config] * 2, "model", top_k=1, shared=True, mtp_heads=2)
    names = set_trainable(fused)
    assert names == ["gate", "mtp"]
    batch = _batch(256)
    loss_fn = make_loss(MoEEObjective(alpha=0.5, beta=0.3))
    import mlx.nn as nn

    (loss, ntoks), grads = nn.value_and_grad(fused, loss_fn)(fused, batch)
    from mlx.utils import tree_flatten

    assert {k.split(".")[0] for k, _ in tree_flatten(grads)} == {"gate", "mtp"}
    assert float(ntoks) == 2 * 9
    g = np.array(grads["gate"]["proj"]["weight"])
    assert np.abs(g).sum() > 0  # the router learns at k = 1 (straight-through renormalisation)
    base = make_loss(MoEEObjective(alpha=0.0, beta=0.0))(fused, batch)[0]
    h, aux = fused.route(batch["inputs"])
    bal = balance_loss(*aux[0], batch["response"])
    from cherry_mlx.training.mtp import mtp_head_loss

    mtp = mtp_head_loss(fused, h, batch, 0.7, 1)
    assert float(loss) == pytest.approx(float(base) + 0.5 * float(bal) + 0.3 * float(mtp), rel=1e-5)


@pytest.mark.parametrize("granularity", ["model", "layer"])
def test_fused_save_reload_generate(tmp_path, tiny_config, granularity):
    import mlx_lm

    a, b = _expert(tiny_config, 1), _expert(tiny_config, 2)
    fused, cfg = assemble([a, b], [tiny_config] * 2, granularity, top_k=1, shared=True, mtp_heads=2)
    out = save_model(fused, tmp_path / "fused", cfg)
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_file"] == "cherry_model.py" and saved["moee"]["num_experts"] == 2
    x = mx.array([[5, 9, 17, 3, 100, 42]], dtype=mx.int32)
    ref = np.array(fused(x))
    back, _ = load_model(out)
    np.testing.assert_allclose(np.array(back(x)), ref, atol=1e-5)
    # plain mlx-lm builds it through its self-contained model file
    mlm, _ = mlx_lm.utils.load_model(out, trust_remote_code=True)
    np.testing.assert_allclose(np.array(mlm(x)), ref, atol=1e-5)

    from cherry_mlx.decoding.generate import generate_tokens
    from cherry_mlx.decoding.speculative import speculative_generate_tokens

    plain = list(generate_tokens(back, [5, 9, 17], max_tokens=12))
    greedy = [5, 9, 17]
    for _ in range(12):  # uncached greedy reference
        greedy.append(int(mx.argmax(back(mx.array([greedy]))[0, -1]).item()))
    assert plain == greedy[3:]
    spec = list(speculative_generate_tokens(back, [5, 9, 17], max_tokens=12))
    assert spec == plain


def _np_batch(seed, B=4, T=32):
    b = _batch(256, B, T, seed)
    return {k: np.array(v) for k, v in b.items()}


def test_fuse_trains_router_through_trainer(tmp_path, tiny_config):
    from cherry_mlx.fusion.run import FuseConfig, fuse
    from cherry_mlx.training.data import CycleBatches

    paths = [str(save_model(_expert(tiny_config, s), tmp_path / f"e{s}", tiny_config))
             for s in (1, 2)]  # fmt: skip
    cfg = FuseConfig.from_flat(experts=paths, steps=4, learning_rate=1e-2, mtp_heads=1, seq_len=32,
                     batch_size=4, runs_dir=str(tmp_path / "runs"), name="fuse")  # fmt: skip
    train = CycleBatches([_np_batch(i) for i in range(3)])
    report, model = fuse(cfg, train, [_np_batch(10)])
    before, _ = assemble(*[list(x) for x in zip(*[load_model(p) for p in paths])], "model", 1,
                         True, 1)  # fmt: skip
    # experts frozen (bit-identical), gate moved
    np.testing.assert_array_equal(
        np.array(model.experts[1].model.layers[0].mlp.up_proj.weight),
        np.array(before.experts[1].model.layers[0].mlp.up_proj.weight),
    )
    r = report["routing"]
    assert abs(sum(r["load"]) - 1) < 1e-3 and 0 <= r["routing_entropy"] <= 1
    assert r["tokens"] == int(np.array(_np_batch(10)["response"]).sum())
    saved, _ = load_model(report["out"])
    x = mx.array([[3, 4, 5, 6]])
    np.testing.assert_allclose(np.array(saved(x)), np.array(model(x)), atol=1e-5)
    assert report["cost"]["flops_per_token"] > report["cost"]["active_params"] * 2


@pytest.mark.parametrize("granularity", ["model", "layer"])
def test_cost_counts_mtp_head_parameters(tiny_config, granularity):
    """The reported params include the MTP heads the saved model holds (they were left out:
    a 1.70M report for a 2.12M checkpoint); norms are not counted anywhere in the cost."""
    from mlx.utils import tree_flatten

    from cherry_mlx.fusion.flops import format_cost, moee_cost

    experts = [_expert(tiny_config, s) for s in (1, 2)]
    sizes = {}
    for heads in (0, 2):
        model, cfg = assemble(experts, [tiny_config] * 2, granularity, 1, True, heads)
        n = sum(v.size for k, v in tree_flatten(model.parameters()) if "norm" not in k)
        cost = moee_cost(cfg, 32)
        assert cost["params"] == n, (heads, cost["params"], n)
        sizes[heads] = cost
    assert sizes[2]["mtp_params"] > 0 and sizes[0]["mtp_params"] == 0
    assert sizes[2]["active_params"] == sizes[0]["active_params"]
    assert "MTP heads" in format_cost(sizes[2]) and "MTP" not in format_cost(sizes[0])


def test_fuse_names_its_run_and_ablation_keeps_rungs_inside(tmp_path, tiny_config, monkeypatch):
    """Without --name the trainer run of `fuse` is called moee-..., not the trainer's default
    cherry-tiny-gt-... (which `generate` would then pick as the newest cherry-tiny run); the
    ablation's rung runs live in the ablation folder, not loose under runs/."""
    import cherry_mlx.fusion.run as run_mod
    from cherry_mlx.fusion.run import FuseConfig, fuse
    from cherry_mlx.training.data import CycleBatches

    paths = [str(save_model(_expert(tiny_config, s), tmp_path / f"e{s}", tiny_config))
             for s in (1, 2)]  # fmt: skip
    runs = tmp_path / "runs"
    cfg = FuseConfig.from_flat(experts=paths, steps=1, seq_len=32, batch_size=4, runs_dir=str(runs))
    train = CycleBatches([_np_batch(i) for i in range(2)])
    report, _ = fuse(cfg, train, [_np_batch(10)])
    assert Path(report["run_dir"]).parent == runs
    assert Path(report["run_dir"]).name.startswith("moee-model-")

    seen = []
    real = run_mod.fuse

    def spy(rung, *a, **k):
        seen.append(rung.runs_dir)
        return real(rung, *a, **k)

    monkeypatch.setattr(run_mod, "fuse", spy)
    out = tmp_path / "abl"
    cfg = FuseConfig.from_flat(experts=paths, steps=1, seq_len=32, batch_size=4, runs_dir=str(runs),
                     out=str(out))  # fmt: skip
    run_mod.ablate(cfg, CycleBatches([_np_batch(i) for i in range(2)]), [_np_batch(10)])
    assert seen and all(s == str(out) for s in seen)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [f"abl-rung{i}" for i in range(4)]
    assert sorted(p.name for p in runs.iterdir()) == [Path(report["run_dir"]).name]


def test_fuse_reports_each_expert_alone(tmp_path, tiny_config):
    """The report puts every expert's own held-out loss beside the mixture's (a fused model
    worse than its best expert was invisible); one expert fused top-1 scores as itself."""
    from cherry_mlx.fusion.run import FuseConfig, fuse
    from cherry_mlx.training.data import CycleBatches, valid_batches
    from cherry_mlx.training.evaluate import loss_breakdown

    paths = [str(save_model(_expert(tiny_config, s), tmp_path / f"e{s}", tiny_config))
             for s in (1, 2)]  # fmt: skip
    val = [_np_batch(10)]
    out = str(tmp_path / "f")
    cfg = FuseConfig.from_flat(experts=paths, steps=0, seq_len=32, batch_size=4, out=out)
    report, _ = fuse(cfg, CycleBatches([_np_batch(0)]), val)
    got = report["experts_eval"]
    assert [e["expert"] for e in got] == paths
    for e, p in zip(got, paths):
        ref = loss_breakdown(load_model(p)[0], valid_batches(val, 4, 32))
        assert e["total"] == pytest.approx(ref["total"], rel=1e-5)
    one_cfg = FuseConfig.from_flat(experts=paths[:1], steps=0, seq_len=32, batch_size=4)
    one, _ = fuse(one_cfg, CycleBatches([_np_batch(0)]), val)
    assert one["eval"]["total"] == pytest.approx(one["experts_eval"][0]["total"], rel=1e-5)
    saved = json.loads((tmp_path / "f" / "fuse_report.json").read_text())
    assert len(saved["experts_eval"]) == 2
