
import pytest
import torch

from otsr.evaluation import check_pair
from otsr.pairs import (
    PAIRS,
    ConvexMixture,
    DegradedImages,
    best_affine_l2_uvp,
    make_pair,
    pair_parameters,
)
from otsr.testing import LinearPair

SMALL = {"gaussian-shift": {"dim": 4}, "gaussian": {"dim": 4}, "convex-mixture": {"dim": 4}, "icnn-mixture": {"dim": 4},
         "degraded-images": {"size": 16, "pool": 64}, "sr-folders": {"hr_crop": 32, "workers": 0},
         "convex-images": {"size": 8, "pool": 64}}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_every_pair_samples_its_shape_and_reproduces_from_params(name):
    pair = make_pair(name, **SMALL[name])
    check_pair(pair)
    twin = make_pair(pair.name, **pair.params())
    check_pair(twin)  # the same calls in the same order (streaming pairs depend on what was drawn before)
    a = pair.sample_p(8, torch.Generator().manual_seed(5))
    b = twin.sample_p(8, torch.Generator().manual_seed(5))
    assert a.shape == (8, *pair.shape)
    assert torch.equal(a, b)
    assert pair.var_q() > 0
    assert pair.has_true_map == (name != "sr-folders")  # real unpaired SR data has no known map


def test_unknown_pair_and_parameter_name_the_problem():
    with pytest.raises(ValueError, match="unknown pair 'nope'.*gaussian-shift"):
        make_pair("nope")
    with pytest.raises(ValueError, match="unknown parameter.*'dimension'"):
        make_pair("gaussian-shift", dimension=3)


@pytest.mark.parametrize("name,key,value", [("convex-mixture", "dim", 1), ("convex-mixture", "dim", 257),
                                            ("degraded-images", "size", 4), ("gaussian-shift", "dim", 0)])
def test_dimension_outside_range_is_rejected(name, key, value):
    with pytest.raises(ValueError, match=f"{key}={value} is outside its range"):
        make_pair(name, **{key: value})


@pytest.mark.parametrize("dim", [8, 16, 64])
def test_convex_mixture_is_far_from_linear(dim):
    assert best_affine_l2_uvp(ConvexMixture(dim=dim), n=1 << 14) >= 20.0


def test_convex_mixture_map_is_a_gradient_of_a_convex_function(rng):
    pair = ConvexMixture(dim=8)
    a, b = pair.sample_p(1000, rng), pair.sample_p(1000, rng)
    # monotone: <T(a) - T(b), a - b> >= 0 for every pair of points
    assert ((pair.true_map(a) - pair.true_map(b)) * (a - b)).sum(1).min() >= 0


def test_image_degradation_is_monotone_and_blurs(rng):
    pair = DegradedImages(size=16, pool=64)
    a, b = pair.sample_q(32, rng), pair.sample_q(32, rng)
    inner = ((pair.degrade(a) - pair.degrade(b)) * (a - b)).flatten(1).sum(1)
    assert inner.min() > 0  # grad psi strictly monotone: the inverse map exists
    x, y = pair.sample_with_target(32, rng)
    grad = lambda z: (z[..., 1:] - z[..., :-1]).abs().mean()  # noqa: E731
    assert grad(x) < 0.7 * grad(y)  # the inputs are blurrier than the targets


def _write_png(path, h, w, seed):
    from torchvision.io import write_png

    g = torch.Generator().manual_seed(seed)
    write_png(torch.randint(0, 255, (3, h, w), generator=g, dtype=torch.uint8), str(path))


def test_image_pair_from_a_folder(tmp_path):
    for i in range(3):
        _write_png(tmp_path / f"img{i}.png", 40, 50, i)
    pair = DegradedImages(source=str(tmp_path), size=16, pool=30)
    assert pair.crops.shape == (30, 3, 16, 16)
    check_pair(pair)


def test_image_pair_bad_folders_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="image folder .*missing does not exist"):
        DegradedImages(source=str(tmp_path / "missing"), size=16)
    with pytest.raises(ValueError, match="holds no images"):
        DegradedImages(source=str(tmp_path), size=16)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        DegradedImages(source=str(tmp_path), size=16)


def test_user_pair_with_wrong_shape_is_rejected():
    check_pair(LinearPair())
    with pytest.raises(ValueError, match=r"sample_p\(3\) returned shape \(3, 3\), expected \(3, 2\)"):
        check_pair(LinearPair(wrong_shape=True))


def test_pair_parameters_lists_defaults():
    assert pair_parameters("gaussian-shift") == {"dim": 16, "shift": 4.0}


def test_icnn_mixture_samples_p_as_each_sample_times_its_gathered_factor():
    """The CPU sampler applies each component's factor through a broadcast view; the numbers are those of the
    plain formula (each sample multiplied by its own gathered factor), so earlier figures on these pairs stand."""
    pair = make_pair("icnn-mixture", dim=16, seed=1)
    got = pair.sample_p(512, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    comp = torch.multinomial(pair.weights, 512, replacement=True, generator=g)
    z = torch.randn(512, 16, generator=g)
    assert len(set(comp.tolist())) == pair.components  # every component drawn
    assert torch.equal(got, pair.means[comp] + torch.einsum("nij,nj->ni", pair.chols[comp], z))
