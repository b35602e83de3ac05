"""Networks and their wrappers: shapes, the warm start's saddle point at init, and the data-unit scaling."""

import pytest
import torch

from otsr import TrainConfig
from otsr.costs import kappa
from otsr.pairs import Gaussian
from otsr.state import build_models
from otsr.warm_start import fit_gaussians


@pytest.fixture
def pair():
    return Gaussian(dim=6, seed=3)


def test_warm_started_map_is_the_bures_map_and_the_potential_its_quadratic(pair):
    """At init (zero-initialised heads) T is the closed-form Gaussian map and f = f0, whose gradient condition
    grad_y [kappa |x - y|^2 - f0(y)] = 0 at y = T(x) makes (T, f0) the saddle point of the Gaussian fits."""
    fit = fit_gaussians(pair, warm=True, n=1 << 15)
    t, f = build_models(TrainConfig(method="ots", cost="mean"), pair.shape, pair.shape_q, fit=fit)
    x = pair.sample_p(256, torch.Generator().manual_seed(1))
    tx = t(x)
    assert torch.allclose(tx, pair.true_map(x), atol=0.15)  # the Bures map of the (estimated) Gaussians
    y = tx.detach().requires_grad_(True)
    k = kappa("mean", 6)
    inner = (k * (x - y).pow(2).sum(1) - f(y)).sum()
    (grad,) = torch.autograd.grad(inner, y)
    assert grad.abs().max() < 1e-4


def test_gan_critic_has_no_quadratic_and_map_starts_at_identity(pair):
    fit = fit_gaussians(pair, warm=False, n=4096)
    t, f = build_models(TrainConfig(method="gan"), pair.shape, pair.shape_q, fit=fit)
    x = pair.sample_p(64, torch.Generator())
    assert torch.allclose(t(x), x, atol=1e-6)
    assert not f.quadratic


@pytest.mark.parametrize("shape,shape_q,names", [((16,), (16,), ("ResMLP", "MLP")),
                                                 ((3, 16, 16), (3, 16, 16), ("UNet", "ResNetCritic")),
                                                 ((3, 8, 8), (3, 32, 32), ("EDSR", "ResNetCritic"))])
def test_default_networks_and_output_shapes(shape, shape_q, names):
    t, f = build_models(TrainConfig(width=8, critic_width=8, depth=2), shape, shape_q)
    x = torch.rand(2, *shape)
    assert (type(t.net).__name__, type(f.net).__name__) == names
    assert t(x).shape == (2, *shape_q) and t(x).dtype == torch.float32
    assert f(torch.rand(2, *shape_q)).shape == (2,)


def test_image_maps_start_at_their_base():
    """UNet starts at the identity and EDSR at bicubic upsampling: training starts from the content."""
    t, _ = build_models(TrainConfig(width=8, depth=2), (3, 8, 8), (3, 32, 32))
    x = torch.rand(2, 3, 8, 8)
    bicubic = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.allclose(t(x), bicubic, atol=1e-5)


def test_networks_are_seeded_by_the_config():
    a, _ = build_models(TrainConfig(seed=1), (4,), (4,))
    b, _ = build_models(TrainConfig(seed=1), (4,), (4,))
    c, _ = build_models(TrainConfig(seed=2), (4,), (4,))
    sa, sb, sc = (m.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
