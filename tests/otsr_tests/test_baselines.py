"""The report's reference lines: the start map, the best affine map, the sampling-noise floor."""

import pytest

from otsr.baselines import baselines, noise_floor, noise_spread
from otsr.pairs import make_pair


def test_noise_floor_is_small_and_shrinks_with_the_sample():
    pair = make_pair("gaussian-shift", dim=4)
    small, large = noise_floor(pair, "mean", 256), noise_floor(pair, "mean", 4096)
    assert set(small) == {"bias_mean_shift", "bias_sliced_w2", "bias_frechet"}
    assert large["bias_sliced_w2"] < small["bias_sliced_w2"] < 0.5
    start = baselines(pair, "mean", 1024)
    assert start["identity"]["bias_mean_shift"] == pytest.approx(4.0, rel=0.1)  # the identity misses by delta
    assert start["best_affine"]["l2_uvp"] < 0.1  # a shift is affine
    assert "content_floor" not in start  # only pairs with a content reference


def test_noise_spread_is_the_estimates_scatter_far_below_the_floors_level():
    """The selection's tolerance: the bias of a perfect map moves by its spread when its outputs are redrawn, an order
    below the floor that every map shares (measured on convex-mixture D = 64 at 4,096 samples: 0.05 against 0.40)."""
    pair = make_pair("convex-mixture", dim=16)
    floor, spread = noise_floor(pair, "mean", 1024), noise_spread(pair, "mean", 1024, draws=4)
    assert set(spread) == set(floor)
    assert 0 < spread["bias_sliced_w2"] < floor["bias_sliced_w2"] / 3
    assert noise_spread(pair, "mean", 1024, draws=4) == spread  # fixed seeds: the same tolerance every run
