"""Layouts of the compressed stack: balanced groups, --layout, --loops 1 without a core, the
sweep's default grid, and the paper's configurations (Tables 5, C.1, C.2) by hand."""

import pytest
from _train_helpers import source_and_data

from cherry_mlx.compression.heal import CompressConfig, compress, recurrence_of
from cherry_mlx.compression.merge import balanced_groups, describe_groups, plan_groups
from cherry_mlx.compression.recurrent import plan_recurrence
from cherry_mlx.compression.sweep import default_grid


def test_balanced_groups_by_hand():
    # 8 -> 6: bounds round(j * 8/6) = 0, 1, 3, 4, 5, 7, 8
    assert balanced_groups(8, 6) == [[0], [1, 2], [3], [4], [5, 6], [7]]
    # 8 -> 5: bounds round(j * 1.6) = 0, 2, 3, 5, 6, 8
    assert balanced_groups(8, 5) == [[0, 1], [2], [3, 4], [5], [6, 7]]
    # 10 -> 4: bounds round(j * 2.5), halves up = 0, 3, 5, 8, 10
    assert [len(g) for g in balanced_groups(10, 4)] == [3, 2, 3, 2]
    assert balanced_groups(48, 6) == [list(range(8 * j, 8 * j + 8)) for j in range(6)]
    assert plan_groups(8, to="6L") == balanced_groups(8, 6)
    assert plan_groups(8, groups="2,1,2,1,1,1") == [[0, 1], [2], [3, 4], [5], [6], [7]]  # wins
    note = describe_groups(balanced_groups(8, 6))
    assert "sizes 1,2,1,1,2,1" in note and "layers 0,1-2,3,4,5-6,7" in note
    assert describe_groups(balanced_groups(8, 4)) == ""


@pytest.mark.parametrize("n, k", [(48, 36), (48, 20), (9, 6), (8, 7), (7, 3)])
def test_balanced_groups_differ_by_at_most_one(n, k):
    sizes = [len(g) for g in balanced_groups(n, k)]
    assert sum(sizes) == n and len(sizes) == k and max(sizes) - min(sizes) <= 1


# (unique, loops, --layout, effective depth the paper reports)
PAPER = [
    (24, 2, "4,16,4", 40),  # Table 5: 24 = P+C+Q, 40 = P+2C+Q -> C = 16
    (16, 3, "2,12,2", 40),  # 16 + 2C = 40 -> C = 12
    (12, 4, "2,8,2", 36),  # 12 + 3C = 36 -> C = 8
    (8, 6, None, 38),  # default P1 Q1: 1 + 6*6 + 1
    (6, 8, None, 34),  # default P1 Q1: 1 + 4*8 + 1
    (6, 3, None, 14),  # Table C.2 "n = 2": 1 + 4*3 + 1 (its n counts extra passes)
    (6, 5, None, 22),  # Table C.2 "n = 4"
    (6, 7, None, 30),  # Table C.2 "n = 6"
    (6, 10, None, 42),  # Table C.2 n = 10 (loops, as for 8 and 12)
]


@pytest.mark.parametrize("unique, loops, layout, depth", PAPER)
def test_paper_configurations(unique, loops, layout, depth):
    rec = plan_recurrence(unique, loops, layout=layout)
    assert rec.unique == unique and rec.effective_depth == depth
    cfg = CompressConfig.from_flat(layout=layout, loops=loops) if layout else None
    if cfg is not None:  # --layout alone also sets --to
        assert cfg.to == f"{unique}L" and recurrence_of(cfg, unique) == rec


def test_layout_errors_and_no_core_without_loops():
    assert plan_recurrence(2, loops=1).as_dict() == {"prelude": 0, "core": 2, "coda": 0, "loops": 1}
    with pytest.raises(ValueError, match="no core layer"):
        plan_recurrence(2, loops=4)
    with pytest.raises(ValueError, match="adds up to 24 layers but the model has 12"):
        plan_recurrence(12, loops=2, layout="4,16,4")
    for bad in ("4,16", "a,b,c", "1,0,1", "-1,4,1"):
        with pytest.raises(ValueError, match="not prelude,core,coda"):
            plan_recurrence(6, loops=2, layout=bad)


def test_default_sweep_grid():
    assert default_grid(48) == [24, 16, 12, 8, 6, 4, 3]  # every divisor leaving a core (P1 Q1)
    assert default_grid(48, prelude=2, coda=2) == [24, 16, 12, 8, 6]
    assert default_grid(8) == [4] and default_grid(8, 0, 0) == [4, 2, 1]


def test_compress_to_2l_without_loops_and_uneven_to(tiny_config, tmp_path):
    src_dir, data = source_and_data(tiny_config, tmp_path, layers=8, n=1)
    common = dict(model=str(src_dir), heal=False, batch_size=2, seq_len=16)
    res = compress(
        CompressConfig.from_flat(out=str(tmp_path / "a"), to="2L", **common), lambda *_: 0, data
    )
    assert res.model.args.num_hidden_layers == 2 and res.model.args.effective_depth == 2
    assert res.config.get("recurrence") is None
    logs = []
    cfg = CompressConfig.from_flat(out=str(tmp_path / "b"), to="6L", loops=2, **common)
    res = compress(cfg, log=logs.append, data=data)
    assert res.config["merge_map"] == [[0], [1, 2], [3], [4], [5, 6], [7]]
    assert res.model.args.effective_depth == 1 + 2 * 4 + 1
    assert any("sizes 1,2,1,1,2,1" in line for line in logs)
