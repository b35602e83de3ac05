"""Networks and their wrappers: shapes, the warm start's saddle point at init, the data-unit scaling, and the
bundled layout (members stacked, cut back out, independent)."""

import pytest
import torch

from otsr import TrainConfig
from otsr.costs import kappa
from otsr.models import MemberView, member_state
from otsr.pairs import Gaussian
from otsr.state import build_bundle_networks, build_models
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
    tx = t(x[None])[0]
    assert torch.allclose(tx, pair.true_map(x), atol=0.15)  # the Bures map of the (estimated) Gaussians
    y = tx.detach().requires_grad_(True)
    k = kappa("mean", 6)
    inner = (k * (x - y).pow(2).sum(1) - f(y[None])[0]).sum()
    (grad,) = torch.autograd.grad(inner, y)
    assert grad.abs().max() < 1e-4


def test_an_image_pair_warm_starts_at_its_flat_bures_map_and_saddle_point():
    """warm_start='bures' on a same-shape image pair of <= 1024 values: the UNet's base is the Bures map of the
    flattened Gaussian fits and the potential carries the matching quadratic (the same saddle-point condition as
    for vectors); 'auto' keeps images at the identity, and an SR pair cannot be fitted."""
    from otsr.pairs import make_pair
    from otsr.state import build_state

    pair = make_pair("convex-images", size=8, pool=512)
    s = build_state(TrainConfig(method="ots", cost="mean", warm_start="bures", width=8, critic_width=8, depth=2,
                                device="cpu"), pair)
    x = pair.sample_p(64, torch.Generator().manual_seed(1))
    fit = fit_gaussians(pair, warm=True)
    bures = (fit.mean_q + (x.flatten(1).double() - fit.mean_p) @ fit.bures_matrix()).float().reshape(x.shape)
    tx = s.map(x[None])[0]
    assert torch.allclose(tx, bures, atol=1e-4) and not torch.allclose(tx, x, atol=1e-2)
    y = tx.detach().requires_grad_(True)
    inner = (kappa("mean", 192) * (x - y).pow(2).flatten(1).sum(1) - s.critic(y[None])[0]).sum()
    (grad,) = torch.autograd.grad(inner, y)
    assert grad.abs().max() < 1e-5
    plain = build_state(TrainConfig(method="ots", width=8, critic_width=8, depth=2, device="cpu"), pair)
    assert torch.allclose(plain.map(x[None])[0], x, atol=1e-6) and not plain.critic.quadratic
    from otsr.state import wants_warm_start

    with pytest.raises(ValueError, match=r"'warm_start': 'bures' needs .* not \(3, 8, 8\) -> \(3, 32, 32\)"):
        wants_warm_start(TrainConfig(warm_start="bures"), (3, 8, 8), (3, 32, 32))
    with pytest.raises(ValueError, match="at most 1024 values"):
        wants_warm_start(TrainConfig(warm_start="bures"), (3, 32, 32), (3, 32, 32))


def test_a_bundle_hands_each_member_its_networks_as_built_with_the_warm_start():
    """Members cut out of a warm-started bundle are rebuilt with the bundle's own fit: an image map keeps its flat
    Bures base and a vector potential its quadratic (rebuilt with a placeholder fit, the image map failed to load
    its Bures buffers and the vector potential lost f0)."""
    from otsr.pairs import make_pair
    from otsr.trainers.loop import train_bundle

    image = make_pair("convex-images", size=8, pool=256)
    common = dict(method="ots", warm_start="bures", width=8, critic_width=8, depth=2, steps=2, eval_every=2,
                  eval_samples=64, final_eval_samples=64, device="cpu")
    results = train_bundle([TrainConfig(seed=s, **common) for s in (0, 1)], image)
    assert [r.status for r in results] == ["completed", "completed"]
    assert all(r.map.net.warm_image and r.critic.net.quadratic for r in results)
    vec = Gaussian(dim=4, seed=1)
    results = train_bundle([TrainConfig(seed=s, **{**common, "width": 16, "critic_width": 16}) for s in (0, 1)], vec)
    assert all(r.critic.net.quadratic for r in results)


def test_gan_critic_has_no_quadratic_and_map_starts_at_identity(pair):
    fit = fit_gaussians(pair, warm=False, n=4096)
    t, f = build_models(TrainConfig(method="gan"), pair.shape, pair.shape_q, fit=fit)
    x = pair.sample_p(64, torch.Generator())
    assert torch.allclose(MemberView(t)(x), x, atol=1e-6)
    assert not f.quadratic


@pytest.mark.parametrize("shape,shape_q,names", [((16,), (16,), ("ResMLP", "MLP")),
                                                 ((3, 16, 16), (3, 16, 16), ("UNet", "ResNetCritic")),
                                                 ((3, 8, 8), (3, 32, 32), ("EDSR", "ResNetCritic"))])
@pytest.mark.parametrize("k", [1, 3])
def test_default_networks_and_output_shapes(shape, shape_q, names, k):
    members = [TrainConfig(width=8, critic_width=8, depth=2, seed=s) for s in range(k)]
    t, f = build_bundle_networks(members, shape, shape_q)
    x = torch.rand(k, 2, *shape)
    assert (type(t.net).__name__, type(f.net).__name__) == names
    assert t(x).shape == (k, 2, *shape_q) and t(x).dtype == torch.float32
    assert f(torch.rand(k, 2, *shape_q)).shape == (k, 2)


@pytest.mark.parametrize("shape,shape_q", [((5,), (5,)), ((3, 8, 8), (3, 8, 8)), ((3, 4, 4), (3, 16, 16))])
def test_members_of_a_bundle_are_their_solo_networks(shape, shape_q):
    """Stacked member k computes what its solo network computes (weights seeded per member, no mixing), and its
    weights cut back out are the solo weights."""
    members = [TrainConfig(width=8, critic_width=8, depth=2, seed=s, method="gan") for s in (3, 5, 7)]
    t, f = build_bundle_networks(members, shape, shape_q)
    for net in (t, f):  # move off the zero-initialised heads, so outputs depend on every layer
        for p in net.parameters():
            torch.nn.init.normal_(p, std=0.3) if p.ndim > 1 else None
    x, y = torch.rand(3, 4, *shape), torch.rand(3, 4, *shape_q)
    out_t, out_f = t(x), f(y)
    for i, cfg in enumerate(members):
        st, sf = build_models(cfg, shape, shape_q)
        st.load_state_dict(member_state(t, i))
        sf.load_state_dict(member_state(f, i))
        assert torch.allclose(st(x[i:i + 1])[0], out_t[i], rtol=1e-4, atol=1e-4)
        assert torch.allclose(sf(y[i:i + 1])[0], out_f[i], rtol=1e-4, atol=1e-4)
    solo_t, _ = build_models(members[1], shape, shape_q)
    fresh_t, _ = build_bundle_networks(members, shape, shape_q)
    assert all(torch.equal(a, b) for a, b in zip(solo_t.state_dict().values(), member_state(fresh_t, 1).values()))


def test_image_maps_start_at_their_base():
    """UNet starts at the identity and EDSR at bicubic upsampling: training starts from the content."""
    t, _ = build_models(TrainConfig(width=8, depth=2), (3, 8, 8), (3, 32, 32))
    x = torch.rand(2, 3, 8, 8)
    bicubic = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False)
    assert torch.allclose(MemberView(t)(x), bicubic, atol=1e-5)


def test_networks_are_seeded_by_the_config():
    a, _ = build_models(TrainConfig(seed=1), (4,), (4,))
    b, _ = build_models(TrainConfig(seed=1), (4,), (4,))
    c, _ = build_models(TrainConfig(seed=2), (4,), (4,))
    sa, sb, sc = (m.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_the_contrast_band_ignores_a_crops_loudness_and_reaches_only_potentials():
    from otsr.models import CONTRAST_EPS, build_critic, contrast_highpass
    x = torch.randn(4, 6, 16, 16)  # two members of 3 channels
    loud = x.clone()
    loud[0, 3:] *= 10  # member 2 of sample 0 ten times louder: its band is unchanged, nothing else moves
    a, b = contrast_highpass(x, 2, 1e-6), contrast_highpass(loud, 2, 1e-6)
    assert torch.allclose(a, b, atol=1e-4)
    quiet = contrast_highpass(1e-4 * x, 2, CONTRAST_EPS)  # a flat crop is not amplified past 1/eps
    assert quiet.abs().max() < 1e-4 * x.abs().max() * 2 / CONTRAST_EPS
    first = {potential: build_critic("resnet", (3, 16, 16), 8, 2, potential=potential, cost="mean",
                                  contrast=CONTRAST_EPS).net.body[0]
             for potential in (True, False)}
    assert first[True].in_channels == 9 and first[False].in_channels == 6  # image, high-pass (+ contrast band)
    with pytest.raises(ValueError, match="potential_contrast"):
        build_critic("mlp", (4,), 8, 2, potential=True, cost="mean", contrast=CONTRAST_EPS)


def test_the_convex_potential_starts_at_zero_and_keeps_the_maps_problem_convex():
    """critic_model 'icnn', in float64: f = 0 at the start (best response: the identity); with g = 0 the map's problem
    kappa |x - y|^2 - f(y) has exactly the quadratic 2 kappa a I (midpoint gap kappa a |a - b|^2 / 4: sign, scale and
    kappa); a network with negative weights on the previous layer is not convex (the midpoint test sees it), and after
    ``project`` any weights give a convex problem; a GAN critic, a gain above 1 and a warm-start quadratic are
    refused."""
    import math

    from otsr.models import build_critic

    torch.manual_seed(0)
    shape = (3, 8, 8)
    f = build_critic("icnn", shape, 8, 2, potential=True, cost="half_mean", image_stats=(0.4, 0.25))
    x = torch.rand(1, 64, *shape)
    assert torch.equal(f(x), torch.zeros(1, 64))  # as built, in the fp32 it trains in
    f, x = f.double(), x.double()
    kap = kappa("half_mean", 3 * 8 * 8)

    def midpoint_gaps() -> tuple[torch.Tensor, torch.Tensor]:  # (h(a) + h(b)) / 2 - h((a + b) / 2), and kappa |a - b|^2
        a, b = (torch.randn(1, 64, *shape, dtype=torch.float64) for _ in range(2))
        with torch.no_grad():
            h = [kap * (x - v).flatten(2).pow(2).sum(2) - f(v) for v in (a, b, (a + b) / 2)]
        return (h[0] + h[1]) / 2 - h[2], kap * (a - b).flatten(2).pow(2).sum(2)

    with torch.no_grad():
        f.net.a_raw.fill_(math.log(math.expm1(0.3)))  # a = 0.3, g still 0
    gaps, dist = midpoint_gaps()
    assert torch.allclose(gaps, 0.3 / 4 * dist, rtol=1e-5)

    def randomise(hidden_sign: float) -> None:  # weights of both signs; the previous layer's all of one sign
        with torch.no_grad():
            for p in f.net.parameters():
                p.normal_(std=0.05)
            for layer in f.net.hidden:
                layer.weight.copy_(hidden_sign * layer.weight.abs())
            f.net.out.copy_(10 * f.net.out.abs())
            f.net.a_raw.fill_(-30.0)  # no quadratic: convexity rests on g

    randomise(-1.0)
    gaps, dist = midpoint_gaps()
    assert float((gaps / dist).min()) < -1e-5  # not convex, far beyond rounding
    randomise(1.0)
    with torch.no_grad():
        f.net.hidden[0].weight.neg_()
    f.net.project()
    assert all(float(layer.weight.detach().min()) == 0 for layer in f.net.hidden)
    assert float(f.net.out.detach().min()) >= 0
    gaps, dist = midpoint_gaps()
    assert float((gaps / dist).min()) >= -1e-12
    with pytest.raises(ValueError, match="not a GAN critic"):
        build_critic("icnn", shape, 8, 2, potential=False, cost="half_mean")
    with pytest.raises(ValueError, match="potential_gain <= 1"):
        build_critic("icnn", shape, 8, 2, potential=True, cost="half_mean", gain=10.0)
    warm = fit_gaussians(Gaussian(dim=4), True, 256)
    with pytest.raises(ValueError, match="warm_start"):
        build_critic("icnn", shape, 8, 2, potential=True, cost="half_mean", fit=warm)
    with pytest.raises(ValueError, match="perceptual_weight"):  # a VGG term in the cost is not convex in y
        TrainConfig(critic_model="icnn", perceptual_weight=0.1, perceptual_weights="vgg19.pth")


def test_every_potential_update_projects_the_convex_potential_back():
    """TrainState.update calls the potential's ``project``: an update that drives the previous layer's weights
    negative leaves them at 0, not below (deleting the hook fails this)."""
    from otsr.pairs import make_pair
    from otsr.recipes import resolve_config
    from otsr.state import build_state

    pair = make_pair("convex-images", size=8, pool=64)
    s = build_state(resolve_config(pair, {"method": "ots", "device": "cpu", "critic_model": "icnn",
                                          "lr_critic": 1.0}), pair)
    hidden = s.critic.net.hidden
    s.update(s.opt_critic, sum(layer.weight.sum() for layer in hidden).reshape(1))  # descent pushes every weight down
    assert all(float(layer.weight.detach().min()) == 0 for layer in hidden)
