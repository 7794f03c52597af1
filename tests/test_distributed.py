"""Data-parallel training over two local ranks (``mlx.launch -n 2 --backend ring``): the same
losses and weights as one rank on the same global batch, the exactly token-weighted SGT loss over
unevenly tagged shards, a dead or hung rank stopping the other with a message naming it, and
resume with two ranks or one ending where the uninterrupted run ends."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from conftest import TINY

from cherry_mlx.training import resolve_config, train
from cherry_mlx.training.data import CycleBatches
from cherry_mlx.training.distributed import (
    WATCHDOG_EXIT,
    Ranks,
    Shard,
    check_batch_size,
    rank_key,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "weights" / "data" / "default"
TOKENIZER = ROOT / "weights" / "cherry-tiny"


def _env():
    # one BLAS thread per rank (two ranks share two cores), and this checkout's code
    env = dict(os.environ, CHERRY_MLX_QUIET="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _launch(args, timeout=240):
    """Run ``args`` on two local ranks with mlx.launch; returns the completed process."""
    cmd = ["mlx.launch", "-n", "2", "--backend", "ring", sys.executable, *args]
    return subprocess.run(
        cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def small_run(tmp_path):
    """A tiny preset (hidden 64, 2 layers; vocab of the bundled tokenizer) and 48 examples."""
    preset, data = tmp_path / "preset", tmp_path / "data"
    preset.mkdir()
    data.mkdir()
    (preset / "config.json").write_text(json.dumps(dict(TINY, vocab_size=4096)))
    for name, n in (("train.jsonl", 48), ("valid.jsonl", 8)):
        lines = (DATA / name).read_text().splitlines()[:n]
        (data / name).write_text("\n".join(lines) + "\n")
    # --seq-len 32: every batch (global or shard) has the same T, so the two runs compute the
    # same matrix shapes and differ only by the order of float sums
    options = dict(
        preset=str(preset),
        tokenizer=str(TOKENIZER),
        data=str(data),
        runs_dir=str(tmp_path / "runs"),
        batch_size=8,
        seq_len=32,
        learning_rate=3e-4,
        warmup=2,
        eval_every=0,
        report_every=1,
        demo=False,
    )
    return tmp_path, options


def _argv(options, **more):
    out = ["-m", "cherry_mlx_cli.main", "train"]
    for k, v in {**options, **more}.items():
        flag = "--" + k.replace("_", "-")
        if isinstance(v, bool):
            out.append(flag if v else "--no-" + flag[2:])
        else:
            out += [flag, str(v)]
    return out


def _losses(run: Path):
    return [json.loads(ln)["loss"] for ln in (run / "metrics.jsonl").read_text().splitlines()]


def _max_weight_diff(a: Path, b: Path) -> float:
    wa, wb = mx.load(str(a / "model.safetensors")), mx.load(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max(float(mx.abs(wa[k] - wb[k]).max()) for k in wa)


def test_two_ranks_match_one_rank_on_the_same_global_batch(small_run):
    tmp, opt = small_run
    steps = dict(steps=6, save_every=6)
    two = subprocess.Popen(  # started first: the one-rank reference trains meanwhile
        ["mlx.launch", "-n", "2", "--backend", "ring", sys.executable]
        + _argv(opt, name="two", **steps),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    one = train(resolve_config(dict(opt, name="one", **steps)))
    out, _ = two.communicate(timeout=240)
    run_two = tmp / "runs" / "two"
    assert (run_two / "checkpoints" / "step-6").is_dir(), out
    assert out.count("run: ") == 1, out  # only rank 0 prints the summary
    one_losses, two_losses = _losses(one.run_dir), _losses(run_two)
    assert len(one_losses) == len(two_losses) == 6
    np.testing.assert_allclose(two_losses, one_losses, rtol=0, atol=1e-5)
    diff = _max_weight_diff(one.run_dir / "checkpoints/step-6", run_two / "checkpoints/step-6")
    assert diff <= 1e-5
    rows = [json.loads(ln) for ln in (run_two / "metrics.jsonl").read_text().splitlines()]
    assert [r["ntoks"] for r in rows] == [r["ntoks"] for r in one.history]  # global counts


def test_sgt_loss_over_unevenly_tagged_shards_equals_one_rank(tmp_path):
    from _distributed_worker import optimizer, toy_model, uneven_batch
    from mlx.utils import tree_flatten

    from cherry_mlx.selection.select import make_loss
    from cherry_mlx.training.data import prepare_batch
    from cherry_mlx.training.step import make_step

    res = _launch([str(ROOT / "tests" / "_distributed_worker.py"), str(tmp_path)], timeout=120)
    assert (tmp_path / "result.npz").is_file(), res.stdout + res.stderr
    got = np.load(tmp_path / "result.npz")
    assert int(got["size"]) == 2

    model, loss_fn = toy_model(), make_loss("gt", 0.7, 1)
    batch, _ = prepare_batch(uneven_batch(), loss_fn)
    step, state = make_step(model, optimizer(), loss_fn, 0.0)
    loss, ntoks, _, _ = step(batch, None, True)
    mx.eval(state, loss, ntoks)
    assert float(got["ntoks"]) == float(ntoks) == 35.0
    assert abs(float(got["loss"]) - float(loss)) <= 1e-5
    # the shards really are uneven: averaging their mean losses would be wrong by far more
    shard_loss, shard_n = got["shard_losses"][:, 0], got["shard_losses"][:, 1]
    assert list(shard_n) == [29.0, 6.0]
    assert abs(float(shard_loss.mean()) - float(loss)) > 1e-3
    for k, v in tree_flatten(model.parameters()):
        np.testing.assert_allclose(got[f"w.{k}"], np.array(v), rtol=0, atol=1e-5)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start_ranks(tmp, argv):
    """Both ranks started directly (what mlx.launch does locally), so that each rank's own exit
    status is seen: mlx.launch itself exits 0 and terminates the other ranks when one fails."""
    hostfile = tmp / "hosts.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{p}"] for p in _free_ports(2)]))
    procs = []
    for rank in range(2):
        env = dict(_env(), MLX_RANK=str(rank), MLX_HOSTFILE=str(hostfile))
        err = open(tmp / f"rank{rank}.err", "w")
        procs.append(
            subprocess.Popen(
                [sys.executable, *argv], cwd=ROOT, env=env, stdout=err, stderr=err, text=True
            )
        )
    return procs


def _wait_for(path: Path, procs, timeout=180):
    t0 = time.monotonic()
    while not path.exists():
        assert all(p.poll() is None for p in procs), "a rank ended before the fault was injected"
        assert time.monotonic() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize(
    "fault",
    ["kill", pytest.param("hang", marks=pytest.mark.slow)],  # hang: +40 s, the same path
)
def test_a_dead_or_hung_rank_stops_the_other_with_a_message_naming_it(small_run, fault):
    tmp, opt = small_run
    argv = _argv(opt, name="f", steps=200, save_every=2, collective_timeout=8)
    r0, r1 = _start_ranks(tmp, argv)
    try:
        _wait_for(tmp / "runs" / "f" / "checkpoints" / "step-2", [r0, r1])
        os.kill(r1.pid, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
        t0 = time.monotonic()
        code = r0.wait(timeout=60)
        waited = time.monotonic() - t0
    finally:
        for p in (r0, r1):
            if p.poll() is None:
                p.kill()
                p.wait()
    err = (tmp / "rank0.err").read_text()
    assert code != 0 and waited < 60
    last = err.strip().splitlines()[-1]
    assert last.startswith("cherry-mlx: error: rank 0 of 2: "), err
    assert "train --resume" in last and "(any number of ranks)" in last
    if fault == "kill":  # the ring backend notices the closed connection at once
        assert "connection to a peer was lost; rank 1 stopped" in last
    else:  # a stopped process keeps its sockets open: the watchdog ends the wait
        assert code == WATCHDOG_EXIT and "waited 8 s" in last and "rank 1 died or hung" in last


@pytest.mark.slow
def test_resume_after_a_killed_rank_with_two_ranks_or_one_ends_where_the_run_ends(small_run):
    tmp, opt = small_run
    steps = dict(steps=12, save_every=4)
    r0, r1 = _start_ranks(tmp, _argv(opt, name="k", **steps))
    try:
        _wait_for(tmp / "runs" / "k" / "checkpoints" / "step-4", [r0, r1])
        os.kill(r1.pid, signal.SIGKILL)
        assert r0.wait(timeout=60) != 0
    finally:
        for p in (r0, r1):
            if p.poll() is None:
                p.kill()
                p.wait()
    run = tmp / "runs" / "k"
    assert not (run / "checkpoints" / "step-12").exists()
    shutil.copytree(run, tmp / "runs" / "k1")

    res = _launch(_argv({"runs_dir": opt["runs_dir"]}, resume=str(run)))
    assert (run / "checkpoints" / "step-12").is_dir(), res.stdout + res.stderr
    one_rank = train(resolve_config({"runs_dir": opt["runs_dir"], "resume": str(tmp / "runs/k1")}))
    ref = train(resolve_config(dict(opt, name="ref", **steps)))

    for resumed in (run, one_rank.run_dir):
        np.testing.assert_allclose(_losses(resumed), _losses(ref.run_dir), rtol=0, atol=1e-5)
        last = "checkpoints/step-12"
        assert _max_weight_diff(resumed / last, ref.run_dir / last) <= 1e-5


def test_global_batch_must_divide_by_the_ranks():
    with pytest.raises(ValueError, match="--batch-size 6 .* 4 ranks; use a multiple of 4"):
        check_batch_size(6, Ranks(None, 0, 4))
    check_batch_size(8, Ranks(None, 0, 4))


def test_shards_partition_each_global_batch_and_share_its_position():
    batches = [
        {"inputs": np.arange(8 * 3).reshape(8, 3) + 100 * i, "targets": np.zeros((8, 3))}
        for i in range(3)
    ]
    shards = [Shard(CycleBatches(batches), Ranks(None, r, 2)) for r in range(2)]
    for i in range(4):  # wraps around the 3 batches
        rows = [next(s)["inputs"] for s in shards]
        assert rows[0].shape == (4, 3)
        together = np.sort(np.concatenate(rows), axis=0)
        np.testing.assert_array_equal(together, batches[i % 3]["inputs"])
    assert shards[0].state_dict() == shards[1].state_dict() == {"pos": 4}
    one = CycleBatches(batches)
    one.load_state_dict(shards[0].state_dict())  # a one-rank resume continues at the same batch
    np.testing.assert_array_equal(next(one)["inputs"][1::2], next(shards[1])["inputs"])
    with pytest.raises(ValueError, match="do not split evenly over 3 ranks"):
        next(Shard(CycleBatches(batches), Ranks(None, 0, 3)))


def test_random_selection_draws_differ_per_rank_and_not_for_one_rank():
    key = mx.random.key(7)
    assert mx.array_equal(rank_key(key, Ranks()), key)
    k0, k1 = (rank_key(key, Ranks(None, r, 2)) for r in range(2))
    assert not mx.array_equal(k0, k1)


def test_shards_of_a_bucketed_batch_iterator_hold_the_global_batch_rows():
    from cherry_mlx.data.batching import BatchIterator
    from cherry_mlx.data.encode import Encoded

    r = np.random.default_rng(0)
    examples = []
    for n in r.integers(5, 40, 30):
        toks = r.integers(0, 256, n).astype(np.int32)
        resp = np.arange(n) >= n // 2
        examples.append(Encoded(toks, resp, np.zeros(n, np.int8), np.full(n, -1, np.int8)))

    def it():
        return BatchIterator(examples, 8, 48, seed=1, bucket=True, pad_multiple=16)

    full, shards = it(), [Shard(it(), Ranks(None, rk, 2)) for rk in range(2)]
    for _ in range(6):  # crosses an epoch boundary (30 examples, 8 per batch)
        want = np.array(next(full)["targets"])
        got = [np.array(next(s)["targets"]) for s in shards]
        for rank, rows in enumerate(got):  # rows rank::2, each padded to its own longest
            T = rows.shape[1]
            np.testing.assert_array_equal(rows, want[rank::2, :T])
            assert not want[rank::2, T:].any()
    assert shards[0].state_dict() == shards[1].state_dict() == full.state_dict()
