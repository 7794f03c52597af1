"""Parameter accounting against the paper's table and hand-computed formulas."""

import mlx.core as mx

from cherry_mlx.models.info import describe


def test_cherry_1_8b_matches_paper_table_without_allocating():
    mx.reset_peak_memory()
    held = mx.get_active_memory()  # arrays earlier tests keep alive (the peak starts there)
    report = describe("cherry-1.8b")
    rows = report["parameters"]
    # Paper, Section 5.5: text backbone 1,019M; embedding & LM head 385M.
    assert abs(rows["backbone"] - 1_019e6) / 1_019e6 < 0.01
    assert abs(rows["embedding & lm head"] - 385e6) / 385e6 < 0.01
    assert report["effective_depth"] == 48
    assert mx.get_peak_memory() - held < 64 * 2**20  # a 1.4B model in fp32 would be 5.6 GB


def test_tiny_preset_counts_by_formula():
    report = describe("cherry-tiny")
    d, f, v, layers, kv = 128, 320, 4096, 8, 2 * 32
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * f  # q,o + k,v + gate/up/down
    assert report["parameters"]["backbone"] == layers * per_layer
    assert report["parameters"]["embedding & lm head"] == v * d  # tied: one matrix
    assert report["parameters"]["norms"] == (2 * layers + 1) * d
    assert 1e6 <= report["total"] <= 2e6
    fp32 = report["weight_bytes"]["fp32"]
    assert fp32 == report["total"] * 4
    assert report["weight_bytes"]["nvfp4"] < fp32 / 6
