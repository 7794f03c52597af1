"""Head training from the trunk's own generations through the one teacher cache: the cached
replies are the trunk's plain greedy decode with its own final states and greedy tokens, the
build resumes, a cache lacking what heads need is refused in one line, the cached loss equals
the model's own forward pass, only the heads learn, and the training form of the heads matches a
hand-written unrolled loop."""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from _train_helpers import tiny_model_dir
from mlx.utils import tree_flatten

from cherry_mlx.data.teacher_cache import CacheError, TeacherCache
from cherry_mlx.decoding.generate import generate_tokens, prefill
from cherry_mlx.models import build_model
from cherry_mlx.models.loading import load_model
from cherry_mlx.models.mtp import ensure_mtp_heads, set_draft_vocab
from cherry_mlx.training.mtp import HeadDistillLoss
from cherry_mlx.training.mtp_fit import (
    FitConfig,
    draft_vocab_from,
    fit_heads,
    make_batch,
    open_cache,
    sequence_rows,
)
from cherry_mlx.training.teacher import build_cache
from cherry_mlx.training.teacher_config import TeacherConfig

PROMPTS = [[5, 9, 17, 3], [40, 2], [7, 7, 8, 100, 101, 102, 3], [11]]
TOK = Path(__file__).resolve().parents[1] / "weights" / "cherry-tiny"


trunk_dir = tiny_model_dir


def replies(model_dir, out, log=id, max_new=5, **kw):
    """The trunk's greedy replies to PROMPTS, cached for MTP heads (last layer, no EOS stop)."""
    cfg = dict(model=str(model_dir), out=str(out), origin="generate", data="PROMPTS", k=4,
               seq_len=32, rows_per_shard=2, batch_size=4, hidden_layers="last",
               max_new_tokens=max_new, temperature=0.0, stop_at_eos=False)  # fmt: skip
    cfg.update(kw)
    return build_cache(TeacherConfig(**cfg), log=log, prompts=PROMPTS)


@pytest.fixture
def trunk(tmp_path):
    d = trunk_dir(tmp_path / "trunk")
    model, _ = load_model(d)
    return model, d


def test_cached_replies_are_plain_greedy_with_the_trunks_states(trunk, tmp_path):
    model, d = trunk
    cache = TeacherCache.open(replies(d, tmp_path / "c", max_new=6))
    b = cache.row_batch(range(4))
    for i, p in enumerate(PROMPTS):
        n = int(b["length"][i])
        assert n == len(p) + 6 - 1 and list(b["inputs"][i, : len(p)]) == p
        tokens = [int(t) for t in b["inputs"][i, :n]] + [int(b["targets"][i, n - 1])]
        assert tokens[len(p) :] == list(generate_tokens(model, p, max_tokens=6))
        h = prefill(model, mx.array(tokens[:-1]), model.make_cache())  # (1, n, D)
        cached = model.model.norm(mx.array(b["hidden-2"][i, :n].astype(np.float32)))
        np.testing.assert_allclose(np.array(cached), np.array(h[0]), atol=2e-2)
        greedy = b["topk_idx"][i, :n, 0].astype(np.int64)
        np.testing.assert_array_equal(greedy, np.array(mx.argmax(model.logits(h[0]), axis=-1)))
        np.testing.assert_array_equal(greedy[len(p) - 1 :], tokens[len(p) :])


def test_cache_resumes_and_refuses_what_heads_cannot_use(trunk, tmp_path):
    model, d = trunk

    def interrupt(line):
        if line.startswith("shard 1/"):
            raise KeyboardInterrupt  # after the first of two shards

    with pytest.raises(KeyboardInterrupt):
        replies(d, tmp_path / "c", log=interrupt)
    lines = []
    killed = TeacherCache.open(replies(d, tmp_path / "c", log=lines.append))
    assert any(line.startswith("resuming: 1 of 2") for line in lines)
    fresh = TeacherCache.open(replies(d, tmp_path / "fresh"))
    a, b = killed.row_batch(range(4)), fresh.row_batch(range(4))
    for key in b:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    other = trunk_dir(tmp_path / "other", seed=1)
    with pytest.raises(CacheError, match="another source model .*MTP heads") as e:
        open_cache(tmp_path / "c", model, source_dir=other)
    no_states = replies(d, tmp_path / "nh", hidden_layers="")
    with pytest.raises(CacheError, match=r"nh has hidden states .*MTP heads.*'last'") as e2:
        open_cache(no_states, model)
    assert "\n" not in str(e.value) + str(e2.value)


def test_cached_loss_matches_the_trunk_forward_and_only_heads_learn(trunk, tmp_path):
    model, d = trunk
    ensure_mtp_heads(model, 2, "sequential")
    mx.eval(model.parameters())
    cache = open_cache(replies(d, tmp_path / "c"), model, source_dir=d)
    rows = sequence_rows(cache)
    ids = draft_vocab_from(cache, rows, 40, model.args.vocab_size)
    set_draft_vocab(model, ids)
    b = make_batch(model, cache, rows, 64)
    loss_fn = HeadDistillLoss(feature_weight=0.5)
    cached = loss_fn.from_states(model, b["h0"], b["greedy"], b["inputs"], b["valid"])
    # reference: the trunk run on the same tokens (float32 states, its own argmax), one row at a
    # time, per-head losses pooled by their valid positions
    num = np.zeros(2)
    den = np.zeros(2)
    rb = cache.row_batch(rows)
    for i in range(len(rows)):
        x = mx.array(rb["inputs"][i, : rb["length"][i]])[None]
        h0 = model.hidden(x)
        g = mx.argmax(model.logits(h0), axis=-1)
        per = loss_fn.from_states(model, h0, g, x, mx.ones(x.shape, mx.bool_), per_head=True)
        for k, lk in enumerate(per, start=1):
            inside = np.isin(np.array(g[0, k:]), ids)  # positions the loss counts
            num[k - 1] += lk.item() * inside.sum()
            den[k - 1] += inside.sum()
    np.testing.assert_allclose(cached.item(), np.mean(num / den), rtol=2e-3)

    trunk_params = {k: np.array(v) for k, v in tree_flatten(model.model.parameters())}
    heads = {k: np.array(v) for k, v in tree_flatten(model.mtp.parameters())}
    cfg = FitConfig(heads=2, steps=25, batch_size=4, learning_rate=3e-3, warmup=2,
                    draft_vocab=40, valid_share=0.0, save_every=10)  # fmt: skip
    res = fit_heads(model, cache.path, tmp_path / "state", cfg, source_dir=d, log=lambda s: None)
    assert res["done"] and res["step"] == 25 and res["cache"]["sequences"] == 4
    for k, v in tree_flatten(model.model.parameters()):
        np.testing.assert_array_equal(np.array(v), trunk_params[k])
    changed = [
        k for k, v in tree_flatten(model.mtp.parameters()) if not np.array_equal(v, heads[k])
    ]
    assert changed
    assert res["loss_last10"] < cached.item()  # it learnt on the cached features


def test_fit_resumes_where_it_stopped(trunk, tmp_path):
    _, d = trunk
    cache = replies(d, tmp_path / "c")
    cfg = FitConfig(heads=2, steps=6, batch_size=2, warmup=2, draft_vocab=40, save_every=1,
                    compile=False)  # fmt: skip

    def run(steps_first):
        state = tmp_path / f"state{steps_first}"
        if steps_first:  # stop after ``steps_first`` steps, then a fresh model resumes
            mx.random.seed(0)
            model, _ = load_model(d)
            r = fit_heads(model, cache, state, cfg, stop_after=steps_first, log=lambda s: None)
            assert r["step"] == steps_first and not r["done"]
        mx.random.seed(0)
        model, _ = load_model(d)
        fit_heads(model, cache, state, cfg, log=lambda s: None)
        return dict(tree_flatten(model.mtp.parameters()))

    a, b = run(0), run(3)
    for k in a:
        np.testing.assert_allclose(np.array(a[k]), np.array(b[k]), rtol=1e-5, atol=1e-6)


def test_training_form_is_the_unrolled_drafting_chain(tiny_config):
    """Training-time test: head k at position t reads head k-1's own state at t (not the trunk's
    state at t+k-1) and the token t+k. A hand-written loop, one position at a time with each
    head's KV cache, gives the same states as the training form."""
    model = build_model({**tiny_config, "mtp": {"num_heads": 3}})
    mx.eval(model.parameters())
    x = mx.array(np.random.default_rng(0).integers(0, 256, (1, 10)))
    h0 = model.hidden(x)  # (1, L, D)
    states = model.mtp.sequence_states(model, h0, x)
    emb = model.model.embed_tokens(x)
    L = x.shape[1]
    caches = model.mtp.make_cache()
    loop = [[] for _ in range(3)]
    for t in range(L):
        prev = h0[:, t : t + 1]
        for k, head in enumerate(model.mtp.heads, start=1):
            if t + k >= L:
                break
            prev = head(prev, emb[:, t + k : t + k + 1], cache=caches[k - 1])  # its own output
            loop[k - 1].append(prev)
    for k in range(3):
        np.testing.assert_allclose(np.array(states[k]), np.array(mx.concatenate(loop[k], 1)),
                                   rtol=1e-4, atol=1e-5)  # fmt: skip


def test_train_mtp_command_reads_a_teacher_build_cache_or_builds_one(trunk, tmp_path):
    """`teacher build --origin generate --hidden-layers last` then `train-mtp --teacher-cache`
    gives a model whose heads draft (it loads with them); without --teacher-cache the command
    builds the same kind of cache in OUT; a cache without the last layer is a one-line error."""
    from cherry_mlx_cli.main import app
    from typer.testing import CliRunner

    _, d = trunk
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["Hi", "A river?", "Why"]))
    runner = CliRunner()
    common = ["--steps", "4", "--batch-size", "2", "--heads", "2", "--draft-vocab", "40"]
    build = ["teacher", "build", str(d), "--data", str(data), "--origin", "generate",
             "--max-new-tokens", "6", "--seq-len", "32", "--k", "4"]  # fmt: skip
    res = runner.invoke(app, build + ["-o", str(tmp_path / "t"), "--hidden-layers", "last"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train-mtp", str(d), "--teacher-cache", str(tmp_path / "t"),
                              "-o", str(tmp_path / "m1")] + common)  # fmt: skip
    assert res.exit_code == 0, res.output
    model, _ = load_model(tmp_path / "m1")
    assert model.mtp.num_heads == 2 and len(model.args.mtp["draft_vocab"]) == 40
    own = ["--data", str(data), "--prompts", "3", "--max-new-tokens", "5"]
    res = runner.invoke(app, ["train-mtp", str(d), "-o", str(tmp_path / "m2")] + own + common)
    assert res.exit_code == 0, res.output
    assert TeacherCache.open(tmp_path / "m2" / "teacher-cache").rows == 3
    assert load_model(tmp_path / "m2")[0].mtp.num_heads == 2
    res = runner.invoke(app, build + ["-o", str(tmp_path / "nh")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train-mtp", str(d), "--teacher-cache", str(tmp_path / "nh"),
                              "-o", str(tmp_path / "m3")] + common)  # fmt: skip
    assert res.exit_code != 0 and "--hidden-layers" in str(res.exception)
    assert "\n" not in str(res.exception) and not (tmp_path / "m3" / "model.safetensors").exists()
