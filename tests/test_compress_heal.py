"""The compress pipeline end to end on a tiny random model and a learnable synthetic batch."""

import json
import math
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from _train_helpers import source_and_data

from cherry_mlx.compression.heal import CompressConfig, compress, recovered_fraction
from cherry_mlx.models import load_model


def test_recovered_fraction_matches_paper_table():
    # paper Table C.1, 24Lx2: pre 13.19, post 2.93, source 0.994 -> 84%
    assert recovered_fraction(0.994, 13.19, 2.93) == pytest.approx(0.841, abs=1e-3)
    assert np.isnan(recovered_fraction(3.0, 2.0, 1.0))  # no gap to recover


def test_compress_merges_heals_unrolls_heals_and_saves(tiny_config, tmp_path):
    src_dir, data = source_and_data(tiny_config, tmp_path, layers=6, n=2)
    ccfg = CompressConfig.from_flat(
        recipe="paper",
        model=str(src_dir),
        out=str(tmp_path / "out"),
        to="3L",
        loops=3,
        pre_unroll_steps=3,
        heal_steps=3,
        batch_size=2,
        seq_len=16,
        learning_rate=1e-2,
        warmup=0,
        control=True,
    )
    res = compress(ccfg, log=lambda *_: None, data=data)
    names = [s.name for s in res.stages]
    assert names == ["source", "merged", "merged-healed", "unrolled", "healed"]
    st = {s.name: s for s in res.stages}
    assert (st["merged"].unique_layers, st["healed"].effective_depth) == (3, 1 + 3 * 1 + 1)
    assert st["merged-healed"].loss < st["merged"].loss  # stage 1 healing learns
    assert st["healed"].loss < st["unrolled"].loss  # stage 2 healing learns
    assert st["healed"].params == st["merged"].params  # loops add no parameters
    assert (
        res.recovered
        == pytest.approx(
            (st["merged"].loss - st["healed"].loss) / (st["merged"].loss - st["source"].loss)
        )
        or st["merged"].loss <= st["source"].loss
    )
    # the control is the 6-layer source trained for the same 3 + 3 steps
    assert res.control.name == "source + 6 SGT steps" and res.control.unique_layers == 6
    assert res.control.loss < st["source"].loss
    out = Path(ccfg.out)
    report = json.loads((out / "report.json").read_text())
    assert report["control"]["loss"] == pytest.approx(res.control.loss)
    assert [s["name"] for s in report["stages"]] == names
    assert (out / "stages.png").stat().st_size > 1000 and (out / "report.md").is_file()
    back, bcfg = load_model(out / "model")
    assert bcfg["recurrence"] == {"prelude": 1, "core": 1, "coda": 1, "loops": 3}
    assert bcfg["merge_map"] == [[0, 1], [2, 3], [4, 5]]
    x = mx.array(data.valid[0]["inputs"])
    np.testing.assert_allclose(np.array(back(x)), np.array(res.model(x)), rtol=1e-5, atol=1e-5)


def test_no_heal_only_merges_and_unrolls(tiny_config, tmp_path):
    src_dir, data = source_and_data(tiny_config, tmp_path, layers=4, n=1)
    ccfg = CompressConfig.from_flat(
        recipe="paper",
        model=str(src_dir),
        out=str(tmp_path / "out"),
        factor=2,
        loops=4,
        prelude=0,
        coda=0,
        heal=False,
    )
    res = compress(ccfg, log=lambda *_: None, data=data)
    assert [s.name for s in res.stages] == ["source", "merged", "unrolled"]
    assert not list(Path(ccfg.out).glob("heal-*"))
    assert res.model.args.effective_depth == 8
    assert math.isnan(res.recovered)  # nothing healed, nothing recovered: reported as n/a


def test_sweep_writes_table_and_plot_sharing_stage_one(tiny_config, tmp_path):
    from cherry_mlx.compression.sweep import default_grid, parse_list, sweep

    assert default_grid(48) == [24, 16, 12, 8, 6, 4, 3] and default_grid(8) == [4]
    assert parse_list("4L,2", "--sweep-to", depth=True) == [4, 2]
    with pytest.raises(ValueError, match="comma list"):
        parse_list("4,x", "--sweep-loops")
    src_dir, data = source_and_data(tiny_config, tmp_path, layers=4, n=1)
    ccfg = CompressConfig.from_flat(
        recipe="paper",
        model=str(src_dir),
        out=str(tmp_path / "sw"),
        pre_unroll_steps=2,
        heal_steps=2,
        batch_size=2,
        seq_len=16,
        learning_rate=1e-2,
        warmup=0,
    )
    out = sweep(ccfg, uniques=[2], loops=[1, 3], log=lambda *_: None, data=data)
    rows = out["rows"]
    assert [r["config"] for r in rows] == ["2Lx1", "2Lx3 P0Q0"]  # no core with P=Q=1
    assert [r["effective_depth"] for r in rows] == [2, 6]
    assert rows[0]["params"] == rows[1]["params"] < out["source"]["params"]
    # both loop counts start from the same merged-and-healed model (stage 1 run once)
    assert rows[0]["loss_merged_healed"] == rows[1]["loss_merged_healed"]
    assert len(list((tmp_path / "sw" / "2L").glob("heal-1-merged"))) == 1
    table = (tmp_path / "sw" / "sweep.md").read_text()
    assert "| 2Lx3 P0Q0 | 2 | 6 |" in table and "source (no merge)" in table
    assert (tmp_path / "sw" / "sweep.png").stat().st_size > 1000


def test_bad_recurrence_plan_fails_before_any_healing(tiny_config, tmp_path):
    # --prelude/--coda leaving no core used to be found only after stage-1 healing had run
    src_dir, data = source_and_data(tiny_config, tmp_path, layers=4, n=1)
    ccfg = CompressConfig.from_flat(
        recipe="paper",
        model=str(src_dir),
        out=str(tmp_path / "out"),
        factor=2,
        loops=3,
        prelude=1,
        coda=1,
    )
    logged = []
    with pytest.raises(ValueError, match="leave no core layer"):
        compress(ccfg, log=logged.append, data=data)
    assert logged == []  # nothing evaluated, merged or healed
    assert not list((tmp_path / "out").glob("heal-*"))
