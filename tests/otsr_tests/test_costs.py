"""Transport costs: the three scalings, the pairwise matrix, SR's bicubic comparison, and bad names."""

import pytest
import torch

from otsr.costs import cost, kappa, pairwise_cost


def test_costs_are_kappa_times_the_squared_distance():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    sq = (x - y).pow(2).sum(1)
    for name in ("sum", "mean", "half_mean"):
        assert torch.allclose(cost(name, x, y), kappa(name, 8) * sq)
    assert torch.allclose(pairwise_cost("mean", x, y).diagonal().float(), cost("mean", x, y), atol=1e-6)


def test_sr_cost_compares_with_the_bicubic_upsampled_input():
    lr = torch.rand(2, 3, 4, 4)
    up = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.allclose(cost("half_mean", lr, up), torch.zeros(2), atol=1e-7)
    assert cost("half_mean", lr, up + 0.1).allclose(torch.full((2,), 0.5 * 0.01), atol=1e-6)


def test_cost_stays_fp32_under_bf16_autocast():
    x = torch.rand(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c = cost("mean", x, x + 1e-3)
    assert c.dtype == torch.float32 and torch.allclose(c, torch.full((4,), 1e-6), rtol=1e-2)


def test_unknown_cost_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown cost 'l1'; valid costs: "):
        cost("l1", torch.zeros(1, 2), torch.zeros(1, 2))
