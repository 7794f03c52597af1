"""Top-k distillation loss against a numpy reference: renormalisation, temperature, the tail
bucket, and the SGT weighting."""

import mlx.core as mx
import numpy as np
import pytest

from cherry_mlx.compression.grouping import (
    best_members,
    block_influence,
    similarity_groups,
    stream_distances,
)
from cherry_mlx.compression.local_heal import fit_local, loop_units, unit_errors
from cherry_mlx.compression.student import choose_kept, runs_of_kept
from cherry_mlx.training.topk_kd import make_kd_loss, to_mx, topk_kl


def _logsoftmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _teacher(rng, B, T, V, k):
    t_logits = rng.normal(size=(B, T, V)) * 3
    idx = np.argsort(-t_logits, -1)[..., :k]
    val = np.take_along_axis(t_logits, idx, -1)
    lse = np.log(np.exp(t_logits).sum(-1))
    return t_logits, idx, val, lse


@pytest.mark.parametrize("temp", [1.0, 2.0])
def test_renorm_matches_numpy(temp):
    rng = np.random.default_rng(0)
    B, T, V, k = 2, 5, 50, 6
    _, idx, val, lse = _teacher(rng, B, T, V, k)
    s = rng.normal(size=(B, T, V)) * 2
    got = np.array(topk_kl(mx.array(s), mx.array(idx), mx.array(val), mx.array(lse), temp))
    p = np.exp(_logsoftmax(val / temp))  # teacher renormalised over its k ids
    q = np.take_along_axis(_logsoftmax(s / temp), idx, -1)  # student full-vocab log-probs
    want = (p * (np.log(p) - q)).sum(-1) * temp**2
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_renorm_is_zero_only_for_the_renormalised_teacher():
    rng = np.random.default_rng(1)
    B, T, V, k = 1, 3, 40, 5
    _, idx, val, lse = _teacher(rng, B, T, V, k)
    s = np.full((B, T, V), -1e4)
    np.put_along_axis(s, idx, val, -1)  # all mass on the top k, in the teacher's proportions
    got = np.array(topk_kl(mx.array(s), mx.array(idx), mx.array(val), mx.array(lse)))
    np.testing.assert_allclose(got, 0.0, atol=1e-5)
    s2 = s.copy()
    s2[..., np.setdiff1d(np.arange(V), idx[0, 0])[0]] = val.max()  # leak mass outside top k
    leak = np.array(topk_kl(mx.array(s2), mx.array(idx), mx.array(val), mx.array(lse)))
    assert leak[0, 0] > 0.1


def test_tail_is_exact_kl_over_k_plus_one_buckets():
    rng = np.random.default_rng(2)
    B, T, V, k = 2, 4, 30, 4
    t_logits, idx, val, lse = _teacher(rng, B, T, V, k)
    s = rng.normal(size=(B, T, V))
    got = np.array(topk_kl(mx.array(s), mx.array(idx), mx.array(val), mx.array(lse), mode="tail"))
    tp = np.exp(_logsoftmax(t_logits))
    sp = np.exp(_logsoftmax(s))
    pt = np.take_along_axis(tp, idx, -1)
    ps = np.take_along_axis(sp, idx, -1)
    pt = np.concatenate([pt, 1 - pt.sum(-1, keepdims=True)], -1)
    ps = np.concatenate([ps, 1 - ps.sum(-1, keepdims=True)], -1)
    want = (pt * (np.log(pt) - np.log(ps))).sum(-1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # with k = V the tail vanishes and this is the full KL
    idx_all = np.argsort(-t_logits, -1)
    full = np.array(
        topk_kl(mx.array(s), mx.array(idx_all), mx.array(np.take_along_axis(t_logits, idx_all, -1)),
                mx.array(lse), mode="tail")
    )  # fmt: skip
    np.testing.assert_allclose(full, (tp * (np.log(tp) - np.log(sp))).sum(-1), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="temperature 1"):
        topk_kl(mx.array(s), mx.array(idx), mx.array(val), mx.array(lse), 2.0, mode="tail")


class _Fixed:
    """A 'model' returning fixed logits, so the loss function is checked alone."""

    def __init__(self, logits):
        self.logits = mx.array(logits)

    def __call__(self, inputs):
        return self.logits


def test_sgt_weights_follow_eq2():
    rng = np.random.default_rng(3)
    B, T, V, k, lam = 2, 6, 20, 4, 0.7
    _, idx, val, lse = _teacher(rng, B, T, V, k)
    s = rng.normal(size=(B, T, V))
    resp = np.ones((B, T), bool)
    resp[:, :2] = False
    level = np.zeros((B, T), np.int8)
    level[0, [3, 5]] = 1  # row 1 has no GT: its weight is plain (λ acts only where GT exists)
    batch = to_mx(dict(inputs=np.zeros((B, T), np.int32), targets=np.zeros((B, T), np.int32),
                       response=resp, level=level, topk_idx=idx.astype(np.uint16),
                       topk_val=val.astype(np.float16), lse=lse.astype(np.float32)))  # fmt: skip
    loss, ntoks = make_kd_loss(lam=lam)(_Fixed(s), batch)
    per = np.array(topk_kl(mx.array(s), batch["topk_idx"], batch["topk_val"], batch["lse"]))
    row0 = lam * per[0, [3, 5]].mean() + (1 - lam) * per[0, 2:].mean()
    row1 = per[1, 2:].mean()
    want = (row0 * 4 + row1 * 4) / 8  # each row has 4 supervised positions
    assert int(ntoks.item()) == 8
    np.testing.assert_allclose(loss.item(), want, rtol=1e-3)
    plain, _ = make_kd_loss(lam=0.0)(_Fixed(s), batch)
    np.testing.assert_allclose(plain.item(), per[resp].mean(), rtol=1e-3)


# --- which layers: similarity grouping, pruning runs ---------------------------------------


def _additive(costs):
    """d(a, b) = the sum of per-block turns c_i (a stream that turns c_i in block i)."""
    c = np.concatenate([[0.0], np.cumsum(costs)])
    return np.abs(c[:, None] - c[None, :])


def test_similarity_groups_by_hand():
    d = _additive([0.5, 0.1, 0.2, 0.6])
    # candidates {0,1}: 0.6, {1,2}: 0.3, {2,3}: 0.8 -> {1,2}; then {0,1,2}: 0.8 < {1,2,3}: 0.9
    assert similarity_groups(d, 3) == [[0], [1, 2], [3]]
    assert similarity_groups(d, 2) == [[0, 1, 2], [3]]
    assert similarity_groups(d, 4) == [[0], [1], [2], [3]]
    # a cap of 2 forbids both 3-runs; it is relaxed rather than failing
    assert similarity_groups(d, 2, max_size=2) == [[0, 1, 2], [3]]
    with pytest.raises(ValueError, match="cannot group 4 layers into 5"):
        similarity_groups(d, 5)


def test_stream_distances_and_influence_by_hand():
    e = np.eye(3)[None, None]  # (1, 1, 3) unit vectors
    states = [e[..., 0, :], e[..., 1, :], (e[..., 1, :] + e[..., 2, :]) / np.sqrt(2)]
    d = stream_distances(states)
    np.testing.assert_allclose(d[0, 1], 0.5, rtol=1e-5)  # orthogonal: 90 degrees = pi/2, / pi
    np.testing.assert_allclose(d[1, 2], 0.25, rtol=1e-5)  # 45 degrees
    np.testing.assert_allclose(block_influence(d), [1.0, 1 - np.cos(np.pi / 4)], rtol=1e-5)
    assert best_members([[0, 1], [2]], [0.1, 0.3, 0.2]) == [1, 2]


def test_pruning_runs_and_kept_layers():
    bi = [0.9, 0.1, 0.5, 0.2, 0.05, 0.8]
    assert choose_kept(bi, 3, "prune-bi") == [0, 2, 5]
    assert choose_kept(bi, 3, "prune-loop") == [0, 2, 5]
    assert choose_kept(bi, 4, "prune-loop") == [0, 2, 3, 5]
    assert runs_of_kept([1, 2, 5], 6) == [[0, 1], [2, 3, 4], [5]]
    # loop units: prelude and coda keep their runs, the core's runs split into `loops` pieces
    assert loop_units([[0], [1, 2], [3, 4], [5]], 1, 2, 2) == [
        ((0,), 0, 1),
        ((1, 2), 1, 3),
        ((1, 2), 3, 5),
        ((3,), 5, 6),
    ]


# --- local healing: gradients only where intended -----------------------------------------


class _StateCache:
    """The cache reader's interface over states computed from a model (no files)."""

    def __init__(self, model, rows=8, T=12, seed=0):
        from cherry_mlx.compression.redundancy import block_states

        x = mx.array(np.random.default_rng(seed).integers(0, 256, (rows, T)).astype(np.int32))
        st = block_states(model, x)
        self.b = {f"hidden-{i}": np.array(s).astype(np.float16) for i, s in enumerate(st)}
        self.rows = rows

    def row_batch(self, rows, keys=None):
        return {k: v[np.asarray(rows)] for k, v in self.b.items() if keys is None or k in keys}

    def batches(self, batch_size, seed=0, epochs=None, keys=None, rows=None):
        rng = np.random.default_rng(seed)
        while True:
            yield self.row_batch(rng.choice(self.rows, batch_size, replace=False), keys)


def _flat(model):
    from mlx.utils import tree_flatten

    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


def test_local_healing_moves_only_the_units_blocks(tiny_config):
    from cherry_mlx.compression.merge import merge_model
    from cherry_mlx.models import build_model

    cfg = dict(tiny_config, num_hidden_layers=4)
    source = build_model(cfg)
    mx.eval(source.parameters())
    cache = _StateCache(source)
    merged, _ = merge_model(source, cfg, [[0], [1, 2], [3]])
    before = _flat(merged)
    units = [((1,), 1, 3)]  # only merged layer 1 (source layers 1-2) is healed
    err0 = unit_errors(merged.layers, units, cache, range(8))[0]
    fit_local(merged.layers, units, cache, steps=30, lr=3e-3, batch_size=4, log=id)
    err1 = unit_errors(merged.layers, units, cache, range(8))[0]
    after = _flat(merged)
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert changed and all(k.startswith("model.layers.1.") for k in changed)
    assert err1 < err0 * 0.8
    # the source's arrays are untouched (merging made new ones)
    np.testing.assert_array_equal(_flat(source)["model.layers.0.mlp.up_proj.weight"],
                                  before["model.layers.0.mlp.up_proj.weight"])  # fmt: skip


def test_local_healing_of_a_loop_trains_the_tied_core_only(tiny_config):
    from cherry_mlx.compression.recurrent import unroll
    from cherry_mlx.models import build_model

    cfg = dict(tiny_config, num_hidden_layers=6)
    source = build_model(cfg)
    mx.eval(source.parameters())
    cache = _StateCache(source)
    from cherry_mlx.compression.prune import prune_model

    pruned, pcfg = prune_model(source, cfg, [0, 2, 5])
    looped, _ = unroll(pruned, pcfg, loops=2, prelude=1, coda=1)
    units = loop_units(runs_of_kept([0, 2, 5], 6), 1, 1, 2)
    core_units = [u for u in units if u[0] == (1,)]
    assert [u[1:] for u in core_units] == [(2, 4), (4, 5)]  # the core's runs [2, 5) in two
    before = _flat(looped)
    fit_local(looped.layers, core_units, cache, steps=5, lr=1e-3, batch_size=4, log=id)
    after = _flat(looped)
    changed = {k for k in before if not np.array_equal(before[k], after[k])}
    assert changed and all(k.startswith("model.layers.1.") for k in changed)


@pytest.mark.slow
def test_compress_heal_with_distill_end_to_end(tmp_path):
    """A tiny 4-layer model -> 2 layers, teacher cache built on the way, healed, saved, loadable;
    a second run reuses the cache, and a cache of another model is refused."""
    import json
    from pathlib import Path

    from mlx.utils import tree_flatten

    from cherry_mlx.compression.config import CompressConfig
    from cherry_mlx.compression.run import compress_command
    from cherry_mlx.data.teacher_cache import CacheError
    from cherry_mlx.models import build_model, load_model, save_model

    tok = Path(__file__).resolve().parents[1] / "weights" / "cherry-tiny"
    cfg = json.loads((tok / "config.json").read_text())
    cfg.update(hidden_size=64, intermediate_size=128, num_hidden_layers=4, head_dim=16)
    model = build_model(cfg)
    mx.eval(model.parameters())
    save_model(model, tmp_path / "src", cfg, tok)
    data = tmp_path / "data"
    data.mkdir()
    turns = [("user", "Name a colour."), ("assistant", "Blue is a colour of the sky.")]
    ex = {"messages": [{"role": r, "content": c} for r, c in turns]}
    for split in ("train", "valid"):
        (data / f"{split}.jsonl").write_text((json.dumps(ex) + "\n") * 4)
    common = dict(model=str(tmp_path / "src"), to="2L", heal_with="distill", data=str(data))
    common.update(batch_size=2, seq_len=32, local_steps=2, heal_steps=2, eval_batches=1)
    res = compress_command(CompressConfig.from_flat(out=str(tmp_path / "out"), **common), log=id)
    names = [s.name for s in res.stages]
    assert names == ["source", "merged", "merged-healed", "healed"]
    assert (tmp_path / "out" / "teacher-cache" / "manifest.json").is_file()
    loaded, lcfg = load_model(tmp_path / "out" / "model")
    assert lcfg["num_hidden_layers"] == 2 and len(loaded.layers) == 2
    saved = dict(tree_flatten(loaded.parameters()))
    np.testing.assert_array_equal(np.array(saved["model.embed_tokens.weight"]),
                                  np.array(model.model.embed_tokens.weight))  # fmt: skip
    cache = str(tmp_path / "out" / "teacher-cache")
    again = CompressConfig.from_flat(out=str(tmp_path / "out2"), teacher_cache=cache,
                                     grouping="similarity", **common)  # fmt: skip
    assert len(compress_command(again, log=id).stages) == 4
    other = build_model(cfg)
    mx.eval(other.parameters())
    save_model(other, tmp_path / "other", cfg, tok)
    bad = CompressConfig.from_flat(out=str(tmp_path / "out3"), teacher_cache=cache,
                                   **{**common, "model": str(tmp_path / "other")})  # fmt: skip
    with pytest.raises(CacheError, match="another source model"):
        compress_command(bad, log=id)
    with pytest.raises(ValueError, match="need --heal-with distill"):
        CompressConfig.from_flat(**{**common, "heal_with": "sgt", "grouping": "similarity"})
