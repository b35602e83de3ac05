"""The report's reference lines: the start map, the best affine map, the sampling-noise floor."""

import pytest

from otsr.baselines import baselines, noise_floor
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
