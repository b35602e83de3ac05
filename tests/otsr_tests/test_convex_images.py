"""convex-images: psi is convex, T* = grad psi is exact and far from affine, both orientations, bad params raise."""

import pytest
import torch

from otsr.pairs import best_affine_l2_uvp, make_pair


@pytest.fixture(scope="module")
def pair():
    return make_pair("convex-images", size=8, pool=512)


def test_psi_is_convex_along_segments(pair):
    g = torch.Generator().manual_seed(0)
    a, b = pair.sample_q(64, g), pair.sample_q(64, g)
    for t in (0.25, 0.5, 0.75):
        mid = pair.psi(t * a + (1 - t) * b)
        assert torch.all(mid <= t * pair.psi(a) + (1 - t) * pair.psi(b) + 1e-4)


def test_true_map_is_grad_psi_and_is_cyclically_monotone(pair):
    g = torch.Generator().manual_seed(1)
    x, tx = pair.sample_with_target(32, g)
    x2 = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(pair.psi(x2).sum(), x2)
    assert torch.allclose(grad, tx, atol=1e-5)
    # monotone: <T(a) - T(b), a - b> >= 0 for every pair (a property of gradients of convex functions)
    d = (tx[:, None] - tx[None]).flatten(2)
    e = (x[:, None] - x[None]).flatten(2)
    assert (d * e).sum(-1).min() >= -1e-4


def test_push_is_far_from_affine_and_restore_swaps_sides():
    push = make_pair("convex-images", size=8, pool=1024)
    assert best_affine_l2_uvp(push, n=4096) > 5.0  # a pair a linear map solves would test nothing
    restore = make_pair("convex-images", size=8, pool=1024, orientation="restore")
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    xp, yp = push.sample_with_target(16, g1)
    xr, yr = restore.sample_with_target(16, g2)
    assert torch.allclose(xp, yr) and torch.allclose(yp, xr)


def test_seeds_give_different_pairs_and_bad_params_raise():
    a, b = make_pair("convex-images", size=8, pool=256, seed=0), make_pair("convex-images", size=8, pool=256, seed=1)
    assert not torch.equal(a.weights["a1"], b.weights["a1"])
    with pytest.raises(ValueError, match="orientation"):
        make_pair("convex-images", orientation="sideways")
    with pytest.raises(ValueError, match="tau"):
        make_pair("convex-images", tau=-1.0)


@pytest.mark.slow
def test_default_recipe_ots_learns_the_known_map_at_a_reduced_budget():
    """OTS with the CPU image recipe on the default 16x16 pair, 300 steps instead of 4,000 (its cosine over those
    300): from the identity's 91 % L2-UVP it must pass 60 %. Measured (one thread, 2026-12-07): 51.7 % (48.4 % at
    400 steps; the full run was at 47 % after 500 of its steps, README "Images")."""
    from otsr.recipes import resolve_config
    from otsr.trainers import train

    pair = make_pair("convex-images")
    cfg = resolve_config(pair, {"method": "ots", "device": "cpu", "steps": 300, "eval_every": 300,
                                "final_eval_samples": 2048, "eval_samples": 1024})
    res = train(cfg, pair)
    assert res.status == "completed"
    assert res.evals[0]["l2_uvp"] > 85
    assert res.metrics["l2_uvp"] < 60, res.metrics
