"""W, W̃, R, ROI (paper Eq. 3-4) from their definitions on hand-built 'checkpoints'.

Each checkpoint is a stub model whose per-token cross-entropy is set by hand: vocab 2, target 0,
logits [log p, log(1-p)] with p = exp(-c) give CE exactly c. Expected numbers are computed by hand
in the comments, not by the code under test.
"""

import math

import mlx.core as mx
import pytest
from _wave_helpers import BASE, FULL, SGT, FixedCE, batch

from cherry_mlx.evaluation.wave import (
    SplitLoss,
    WaveReport,
    normalised_wave_factor,
    recovered_fraction,
    roi,
    split_losses,
    wave_factor,
)


def test_split_losses_hand_values():
    s = split_losses(BASE, [batch()])
    assert (s.n_total, s.n_gt, s.n_non_gt) == (5, 2, 3)
    assert s.gt == pytest.approx(1.0, rel=1e-5)
    assert s.non_gt == pytest.approx(3.0, rel=1e-5)
    assert s.total == pytest.approx(2.2, rel=1e-5)
    assert s.gt_fraction == pytest.approx(0.4)
    assert s.perplexity == pytest.approx(math.exp(2.2), rel=1e-5)
    assert s.per_category == pytest.approx({"factual": 1.0, "reasoning": 1.0}, rel=1e-5)
    # level >= 2 (super-GT): only position 4 is GT; position 1 becomes non-GT.
    s2 = split_losses(BASE, [batch()], level=2)
    assert (s2.n_gt, s2.n_non_gt) == (1, 4)
    assert s2.non_gt == pytest.approx((1.0 + 3 * 3.0) / 4, rel=1e-5)


def test_wave_metrics_hand_values():
    b0, b1, bf = (split_losses(m, [batch()]) for m in (BASE, SGT, FULL))
    # W = ΔnonGT/ΔGT = (3-2)/(1-0.5) = 2
    assert wave_factor(b0, b1) == pytest.approx(2.0, rel=1e-5)
    # W̃ = (1/3) / (0.5/1) = 2/3
    assert normalised_wave_factor(b0, b1) == pytest.approx(2 / 3, rel=1e-5)
    # R = (2.2-1.4)/(2.2-0.76) = 0.8/1.44
    r = recovered_fraction(b0, b1, bf)
    assert r == pytest.approx(0.8 / 1.44, rel=1e-5)
    # ROI = R / (|G|/|T|) = R / 0.4
    assert roi(r, 0.4) == pytest.approx(0.8 / 1.44 / 0.4, rel=1e-5)
    m = WaveReport(now=b1, base=b0, full=bf).metrics()
    assert m["W"] == pytest.approx(2.0, rel=1e-5)
    assert m["ROI"] == pytest.approx(0.8 / 1.44 / 0.4, rel=1e-5)
    assert m["supervised_fraction"] == pytest.approx(0.4)
    # An explicit supervised fraction (the run's own) overrides the held-out one.
    m2 = WaveReport(now=b1, base=b0, full=bf, supervised_fraction=0.15).metrics()
    assert m2["ROI"] == pytest.approx(0.8 / 1.44 / 0.15, rel=1e-5)
    # Full-sequence against itself recovers everything.
    assert recovered_fraction(b0, bf, bf) == pytest.approx(1.0)


def test_token_weighted_over_batches():
    """Two batches with different token counts: the mean is over tokens, not over batches."""
    one = batch()
    two = {k: mx.concatenate([v, v], axis=0) for k, v in batch().items()}
    sgt2 = FixedCE([7.0, 0.5, 2.0, 2.0, 0.5, 2.0])
    sgt2.logits = mx.concatenate([SGT.logits, BASE.logits], axis=0)

    class Pick:
        def __call__(self, inputs):
            return SGT.logits if inputs.shape[0] == 1 else sgt2.logits

    s = split_losses(Pick(), [one, two])
    # tokens: 1 row of SGT + 1 row SGT + 1 row BASE -> GT (0.5*4 + 1*2)/6, non-GT (2*6 + 3*3)/9
    assert s.gt == pytest.approx(4.0 / 6, rel=1e-5)
    assert s.non_gt == pytest.approx(21.0 / 9, rel=1e-5)
    assert s.n_total == 15


def test_degenerate_ratios_are_nan():
    a = SplitLoss(total=1.0, gt=1.0, non_gt=2.0, n_total=3, n_gt=1, n_non_gt=2)
    assert math.isnan(wave_factor(a, a))  # no GT change
    assert math.isnan(recovered_fraction(a, a, a))
    none = SplitLoss(total=1.0, gt=math.nan, non_gt=1.0, n_total=3, n_gt=0, n_non_gt=3)
    assert math.isnan(wave_factor(none, none))
    assert WaveReport(now=a).metrics() == {}
