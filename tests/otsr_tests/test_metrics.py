import math

import pytest
import torch

from otsr import metrics, theory
from otsr.evaluation import evaluate
from otsr.pairs import Gaussian, GaussianShift, make_pair


@pytest.mark.parametrize("name,params", [("gaussian-shift", {"dim": 16}), ("gaussian", {"dim": 8}),
                                         ("convex-mixture", {"dim": 8})])
def test_true_map_scores_perfectly(name, params, rng):
    pair = make_pair(name, **params)
    x, t_star = pair.sample_with_target(4096, rng)
    assert metrics.l2_uvp(t_star, t_star, pair.var_q()) == 0.0
    assert metrics.cosine(x, t_star, t_star) == pytest.approx(1.0, abs=1e-9)


def test_half_shift_matches_closed_form(rng):
    pair = GaussianShift(dim=16, shift=4.0)
    x, t_star = pair.sample_with_target(1 << 14, rng)
    half = x + 0.5 * pair.delta()
    assert metrics.l2_uvp(half, t_star, pair.var_q()) == pytest.approx(theory.shift_l2_uvp(2.0, 4.0, 16), rel=1e-5)
    assert metrics.cosine(x, half, t_star) == pytest.approx(1.0, abs=1e-6)


def test_identity_on_gaussian_pair_matches_closed_form(rng):
    pair = Gaussian(dim=6, seed=3)
    x, t_star = pair.sample_with_target(1 << 16, rng)
    i_minus_a = torch.eye(6, dtype=torch.float64) - pair.ot_matrix
    expected = (pair.mean_p - pair.mean_q).pow(2).sum() + torch.trace(i_minus_a @ pair.cov_p @ i_minus_a.T)
    assert metrics.l2_uvp(x, t_star, pair.var_q()) == pytest.approx(100 * float(expected) / pair.var_q(), rel=0.02)


def test_gaussian_ot_map_pushes_p_to_q():
    pair = Gaussian(dim=5, seed=1)
    a = pair.ot_matrix
    assert torch.allclose(a, a.T, atol=1e-10)  # gradient of a convex quadratic
    assert torch.linalg.eigvalsh(a).min() > 0
    assert torch.allclose(a @ pair.cov_p @ a, pair.cov_q, atol=1e-8)


def test_sliced_wasserstein_properties(rng):
    a = torch.randn(2000, 5, generator=rng)
    b = torch.randn(2000, 5, generator=rng) + 1.0
    assert metrics.sliced_wasserstein(a, a) == 0.0
    assert metrics.sliced_wasserstein(a, b) > 0.3
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.sliced_wasserstein(a, torch.randn(10, 4))


def test_sliced_wasserstein_in_1d_is_exact_w2(rng):
    a, b = torch.randn(500, 1, generator=rng), 2 * torch.randn(500, 1, generator=rng) + 1
    exact = float((a.sort(0).values - b.sort(0).values).pow(2).mean()) ** 0.5
    assert metrics.sliced_wasserstein(a, b, n_projections=3) == pytest.approx(exact, rel=1e-6)


def test_frechet_matches_bures_closed_form(rng):
    pair = Gaussian(dim=4, seed=2)
    p, q = pair.sample_p(200_000, rng), pair.sample_q(200_000, rng)
    exact = theory.gaussian_w2(pair.mean_p, pair.cov_p, pair.mean_q, pair.cov_q) ** 2
    assert metrics.frechet(p, q) == pytest.approx(exact, rel=0.02)
    assert metrics.frechet(p, p) == pytest.approx(0.0, abs=1e-6)


def test_mean_shift_and_bad_shapes(rng):
    a = torch.randn(100, 3, generator=rng)
    assert metrics.mean_shift(a, a + torch.tensor([3.0, 4.0, 0.0])) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.l2_uvp(a, a[:, :2], 1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.cosine(a, a, a[:50])


def test_streaming_accumulators_equal_one_batch(rng):
    """Evaluation feeds the accumulators chunk by chunk; the batch functions feed one batch: same numbers."""
    x = torch.randn(300, 5, generator=rng)
    t_hat, t_star = x * 1.5 + 0.2, x * 1.4 + torch.randn(300, 5, generator=rng) * 0.1
    acc = metrics.Displacements()
    for i in range(0, 300, 70):
        acc.update(x[i:i + 70], t_hat[i:i + 70], t_star[i:i + 70])
    assert acc.l2_uvp(7.0) == pytest.approx(metrics.l2_uvp(t_hat, t_star, 7.0))
    assert acc.cos() == pytest.approx(metrics.cosine(x, t_hat, t_star))
    direct = 100 * float((t_hat - t_star).double().pow(2).sum(1).mean()) / 7.0  # the definition, written out
    assert metrics.l2_uvp(t_hat, t_star, 7.0) == pytest.approx(direct)
    a, b = metrics.Moments(), metrics.Moments()
    for i in range(0, 300, 64):
        a.update(t_hat[i:i + 64])
        b.update(t_star[i:i + 64])
    assert metrics.frechet_from_moments(a, b) == pytest.approx(metrics.frechet(t_hat, t_star))
    assert a.cov().numpy() == pytest.approx(torch.cov(t_hat.double().T).numpy())


def test_ot_consistency_monotone_vs_anti_monotone(rng):
    x = torch.randn(200, 1, generator=rng)
    assert metrics.ot_consistency(x, 2 * x + 1) == 1.0  # increasing maps are OT in 1-D
    assert metrics.ot_consistency(x, -x) < 0.05  # decreasing maps are the worst assignment


def test_evaluate_reports_shift_and_bias_of_a_translation():
    pair = GaussianShift(dim=16, shift=4.0)
    m = evaluate(lambda x: x + 0.25 * pair.delta(x.device), pair, n=1 << 14, cost="mean")
    assert m["shift"] == pytest.approx(1.0, abs=0.05)
    assert m["bias_mean_shift"] == pytest.approx(theory.shift_bias(1.0, 4.0), abs=0.1)
    assert m["l2_uvp"] == pytest.approx(theory.shift_l2_uvp(1.0, 4.0, 16), rel=0.01)
    assert m["ot_consistency"] == 1.0


def test_theory_closed_forms():
    kappa = 1 / 16
    assert theory.gan_shift(0.0, 4.0, kappa) == 4.0
    assert theory.gan_shift(8.0, 4.0, kappa) == pytest.approx(1.0)
    lam0 = theory.unbiased_lambda_max(4.0, kappa)
    assert theory.gan_shift(lam0, 4.0, kappa) == pytest.approx(4.0)
    assert theory.gan_shift(2 * lam0, 4.0, kappa) == pytest.approx(2.0)
    # the figures of the brief: s_GP(8, 10) = 1.143, s_GP(32, 10) = 0.296
    assert theory.gan_gp_shift(8.0, 10.0, 4.0, kappa) == pytest.approx(1.1429, abs=1e-3)
    assert theory.gan_gp_shift(32.0, 10.0, 4.0, kappa) == pytest.approx(0.2963, abs=1e-3)
    assert theory.gan_gp_shift(8.0, 1e9, 4.0, kappa) == pytest.approx(theory.gan_shift(8.0, 4.0, kappa), rel=1e-6)
    s = theory.gan_gp_shift(8.0, 10.0, 4.0, kappa)
    # the equilibrium: map gradient 2 kappa lam s equals the critic slope a
    assert 2 * kappa * 8.0 * s == pytest.approx(theory.gp_critic_slope(s, 10.0, 4.0))
    with pytest.raises(ValueError):
        theory.gan_shift(-1.0, 4.0, kappa)
    assert math.isclose(theory.shift_l2_uvp(1.0, 4.0, 16), 100 * 9 / 16)


def test_bures_remembers_the_targets_root_and_gives_the_textbook_value():
    from otsr import metrics

    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(600, 12, generator=g, dtype=torch.float64), torch.randn(600, 12, generator=g,
                                                                             dtype=torch.float64) * 1.5 + 0.3
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    s1 = metrics.sqrtm_psd(ca)  # the textbook form, rooted at the first Gaussian
    textbook = float((a.mean(0) - b.mean(0)).pow(2).sum() + torch.trace(ca + cb - 2 * metrics.sqrtm_psd(s1 @ cb @ s1)))
    metrics._ROOTS.clear()
    assert metrics.bures_sq(a.mean(0), ca, b.mean(0), cb) == pytest.approx(textbook, rel=1e-10)
    root = next(iter(metrics._ROOTS.values()))
    assert metrics.bures_sq(a.mean(0), ca * 2, b.mean(0), cb) != pytest.approx(textbook)  # another map, same target
    assert len(metrics._ROOTS) == 1 and next(iter(metrics._ROOTS.values())) is root
    assert metrics.bures_sq(a.mean(0), ca, b.mean(0), cb * 2) != pytest.approx(textbook)  # a new target is rooted
    assert len(metrics._ROOTS) == 2


@pytest.mark.parametrize("shape", [(3, 3, 32, 32), (2, 1, 37, 53), (2, 3, 16, 70)])
def test_highpass_patches_are_the_unfolded_patches_at_the_sixteen_positions(shape):
    import torch.nn.functional as F

    from otsr.features import HF_PATCH, highpass_patches

    z = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    got = highpass_patches(z)
    # the same band, patched the straightforward way: every 8x8 patch unfolded, 16 spread positions taken
    r = 3
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / 2)
    k = k / k.sum()
    c = shape[1]
    low = F.conv2d(F.pad(z, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    low = F.conv2d(F.pad(low, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    patches = F.unfold(z - low, HF_PATCH, stride=HF_PATCH)
    idx = torch.linspace(0, patches.shape[-1] - 1, min(16, patches.shape[-1])).round().long()
    expected = patches[..., idx].transpose(1, 2).reshape(-1, patches.shape[1])
    assert got.shape == (shape[0] * min(16, (shape[2] // 8) * (shape[3] // 8)), c * 64)
    assert torch.equal(got, expected)
