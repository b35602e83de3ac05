"""Gradient-norm clipping (config ``grad_clip``): per member, relative to each member's running mean norm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from otsr.config import TrainConfig
from otsr.optim import MemberAdam


def _adam(k: int, clip: float) -> tuple[nn.Parameter, MemberAdam]:
    w = nn.Parameter(torch.zeros(k * 3, 2))
    return w, MemberAdam([("w", w)], k, [0.1] * k, (0.0, 0.9), clip=clip)


def _step(w: nn.Parameter, opt: MemberAdam, grad: torch.Tensor) -> torch.Tensor:
    w.grad = grad.clone()
    opt.step()
    return w.grad  # the gradient Adam used, after clipping


def test_a_spike_is_capped_at_clip_times_the_running_mean_per_member():
    w, opt = _adam(2, clip=2.0)
    steady = torch.ones(6, 2)  # each member's norm: sqrt(6)
    for _ in range(5):
        used = _step(w, opt, steady)
        assert torch.equal(used, steady)  # at its running mean: untouched
    spike = steady.clone()
    spike[:3] *= 10  # member 0 only
    used = _step(w, opt, spike)
    assert used[:3].norm().item() == pytest.approx(2 * 6**0.5, rel=1e-6)  # capped at 2x the mean norm
    assert torch.equal(used[3:], steady[3:])  # the other member is untouched
    assert opt.clipped.tolist() == [1.0, 0.0]
    # the mean moved by the capped norm, not the spike's
    assert opt.norm_mean[0].item() == pytest.approx(6**0.5 * (0.99 + 0.01 * 2), rel=1e-6)


def test_a_bundled_member_is_clipped_as_it_would_be_alone():
    torch.manual_seed(0)
    grads = [torch.randn(6, 2) * (10 if t == 3 else 1) for t in range(6)]
    w, opt = _adam(2, clip=1.5)
    solo = [_adam(1, clip=1.5) for _ in range(2)]
    for g in grads:
        _step(w, opt, g)
        for i, (ws, os) in enumerate(solo):
            _step(ws, os, g[3 * i:3 * (i + 1)])
    assert torch.allclose(w.detach(), torch.cat([ws.detach() for ws, _ in solo]), atol=1e-7)
    assert opt.clipped.tolist() == [os.clipped.item() for _, os in solo]
    assert opt.clipped.sum() > 0  # the spike was capped somewhere


def test_a_zero_first_gradient_does_not_freeze_the_member():
    # OTS starts the map at the potential's best response (identity map, zero potential), so its first gradient is 0:
    # a running mean started there would cap every later update at 0
    w, opt = _adam(2, clip=2.0)
    zero = torch.zeros(6, 2)
    zero[3:] = 1.0  # member 1 has a gradient from the start
    _step(w, opt, zero)
    used = _step(w, opt, torch.ones(6, 2))
    assert torch.equal(used, torch.ones(6, 2))  # member 0's first non-zero gradient passes whole
    assert opt.norm_mean.tolist() == pytest.approx([6**0.5, 6**0.5])
    assert w[:3].abs().sum() > 0  # and it moved


def test_off_leaves_the_gradient_alone():
    w, opt = _adam(1, clip=0.0)
    for scale in (1.0, 100.0):
        assert torch.equal(_step(w, opt, torch.full((3, 2), scale)), torch.full((3, 2), scale))
    assert opt.norm_mean is None


@pytest.mark.parametrize("value", [0.5, -1.0, float("nan")])
def test_grad_clip_below_one_is_refused_by_name(value):
    with pytest.raises(ValueError, match="grad_clip"):
        TrainConfig(grad_clip=value)
