"""Unpaired super-resolution: data, metrics, trainers on the demo set, tiled upscaling, pretrained-weight paths
(tested with small stand-in weight files: random-init torchvision models saved locally)."""

import json

import numpy as np
import pytest
import torch
from torchvision.io import write_png

from otsr.cli import main
from otsr.models import MemberView, build_map
from otsr.perceptual import VGGFeatures
from otsr.sr.data import CropStream, DataError, check_min_size, list_images, paired_validation
from otsr.sr.demo import build_demo
from otsr.sr.image_metrics import FIDInception, LPIPSMetric, psnr, ssim
from otsr.sr.pair import UnpairedSR
from otsr.sr.upscale import upscale_tiled


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return build_demo(tmp_path_factory.mktemp("demo") / "sr_demo")


def _png(path, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    write_png(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8), str(path))


def test_demo_pools_are_disjoint_tiles_of_the_same_photos(demo):
    """One content distribution: every training photo gives tiles to both pools, no tile to both; the LR tiles'
    HR originals are kept apart for the content floor; validation photos are held out."""
    hr, lr, ref = (list_images(demo / d) for d in ("train_hr", "train_lr", "train_lr_hr"))
    sources = lambda files: {f.stem.rsplit("_", 1)[0] for f in files}  # noqa: E731
    assert sources(hr) == sources(lr) and len(sources(hr)) >= 6
    assert not {f.stem for f in hr} & {f.stem for f in lr}  # disjoint tiles
    assert [f.stem for f in ref] == [f.stem for f in lr]
    valid = paired_validation(demo / "valid_lr", demo / "valid_hr", 4)
    assert valid and not sources([h for _, h in valid]) & sources(hr)


def _edsr(features: int, blocks: int) -> MemberView:
    """An x4 EDSR map as a function of a batch (one member)."""
    return MemberView(build_map("edsr", (3, 8, 8), features, blocks, (3, 32, 32)))


def test_edsr_and_pair_shapes(demo):
    net = _edsr(features=8, blocks=2)
    assert net(torch.rand(2, 3, 8, 12)).shape == (2, 3, 32, 48)
    pair = UnpairedSR(root=str(demo), hr_crop=32, workers=0)
    g = torch.Generator()
    assert pair.sample_p(5, g).shape == (5, 3, 8, 8) and pair.sample_q(5, g).shape == (5, 3, 32, 32)
    x = pair.sample_p(3, g)
    assert 0 <= float(x.min()) and float(x.max()) <= 1


def test_evaluations_see_the_same_crops(demo):
    """Periodic evaluations of one map agree exactly (fixed evaluation streams), so curves show training, not
    sampling noise; training draws go on from where they were."""
    from otsr.evaluation import evaluate, probe_map

    pair = UnpairedSR(root=str(demo), hr_crop=32, workers=0)
    before = pair.sample_p(4, torch.Generator())
    a = evaluate(probe_map(pair), pair, n=96, cost="half_mean", full=False)
    b = evaluate(probe_map(pair), pair, n=96, cost="half_mean", full=False)
    assert a == b
    fresh = UnpairedSR(root=str(demo), hr_crop=32, workers=0)
    fresh.sample_p(4, torch.Generator())
    assert torch.equal(pair.sample_p(4, torch.Generator()), fresh.sample_p(4, torch.Generator()))
    assert not torch.equal(before, pair.sample_p(4, torch.Generator()))


def test_crop_stream_with_workers(demo):
    stream = CropStream(list_images(demo / "train_hr"), 64, workers=1, batch=16)
    assert stream.take(40, "cpu").shape == (40, 3, 64, 64)


def test_psnr_and_ssim_against_hand_and_skimage_values():
    a = torch.full((1, 3, 16, 16), 0.5)
    assert float(psnr(a, a + 0.1)) == pytest.approx(20.0)  # MSE 0.01 -> 10 log10(1 / 0.01)
    assert float(ssim(a, a)) == pytest.approx(1.0)
    import skimage.metrics as metrics  # the data extra installs scikit-image
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 40, 33, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ref = metrics.structural_similarity(x[0].permute(1, 2, 0).double().numpy(), y[0].permute(1, 2, 0).double().numpy(),
                                        channel_axis=2, data_range=1.0)
    assert float(ssim(x, y)) == pytest.approx(ref, abs=1e-9)
    ref_psnr = metrics.peak_signal_noise_ratio(x.double().numpy(), y.double().numpy(), data_range=1.0)
    assert float(psnr(x, y)) == pytest.approx(ref_psnr, abs=1e-9)


def test_dataset_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="missing does not exist"):
        list_images(tmp_path / "missing")
    (tmp_path / "lr").mkdir()
    (tmp_path / "hr").mkdir()
    _png(tmp_path / "lr" / "a.png", 10, 12)
    _png(tmp_path / "hr" / "a.png", 40, 44)  # should be 40 x 48 at x4
    with pytest.raises(DataError, match=r"a.png \(10x12\) and .*a.png \(40x44\) do not match at x4"):
        paired_validation(tmp_path / "lr", tmp_path / "hr", 4)
    _png(tmp_path / "hr" / "a.png", 40, 48)
    _png(tmp_path / "lr" / "b.png", 10, 12)
    with pytest.raises(DataError, match="b.png has no HR partner"):
        paired_validation(tmp_path / "lr", tmp_path / "hr", 4)
    with pytest.raises(DataError, match=r"a.png is 10x12, smaller than the crop size 16"):
        check_min_size(list_images(tmp_path / "lr"), 16)
    (tmp_path / "lr" / "c.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="cannot read image .*c.png"):
        check_min_size(list_images(tmp_path / "lr"), 4)


@pytest.mark.slow
def test_demo_recipe_stays_on_the_content_then_upscales(demo, tmp_path, capsys):
    """The recipe an HR-32 pair gets (the CPU image recipe: 1/2 MSE to bicubic, 5 map steps, batch 16, potential at
    10x gain) at toy size: the young map does not leave the content (the AIM19 recipe on the code before the fix,
    a05586c: PSNR 15.6 vs 24.3 dB after 40 steps)."""
    out = tmp_path / "run"
    code = main(["train", "--pair", "sr-folders", "--pair-param", f"root={demo}", "--pair-param", "hr_crop=32",
                 "--pair-param", "workers=0", "--method", "ots", "--steps", "40", "--width", "8", "--depth", "2",
                 "--eval-every", "10", "--log-every", "10", "--eval-samples", "64", "--final-eval-samples", "128",
                 "--device", "cpu", "--out", str(out)])
    assert code == 0
    assert "completed at step 40" in capsys.readouterr().out
    printed = json.loads((out / "result.json").read_text())
    m = printed["metrics"]
    assert {"psnr", "ssim", "psnr_bicubic", "ssim_bicubic", "bias_frechet_pool16"} <= set(m)
    config = json.loads((out / "config.json").read_text())["train"]
    assert (config["cost"], config["map_steps"], config["batch_size"], config["potential_gain"]) == (
        "half_mean", 5, 16, 10.0)  # the recipe
    assert [e["step"] for e in printed["evals"]] == [0, 10, 20, 30, 40]  # 0: the bicubic start
    for e in printed["evals"]:  # every evaluation, not only the last
        assert abs(e["psnr"] - e["psnr_bicubic"]) < 1.0, e
    assert "fid" in printed["unavailable"] and "lpips" in printed["unavailable"] and "fid" not in m
    assert (out / "map.png").stat().st_size > 1000
    written = main(["upscale", str(demo / "valid_lr" / sorted(p.name for p in (demo / "valid_lr").iterdir())[0]),
                    "--checkpoint", str(out), "--out", str(tmp_path / "up"), "--tile", "16", "--device", "cpu"])
    assert written == 0 and len(list((tmp_path / "up").glob("*_x4.png"))) == 1


def test_tiled_upscale_equals_untiled():
    torch.manual_seed(0)
    net = _edsr(features=8, blocks=2).eval()
    torch.nn.init.normal_(net.net.net.tail.weight, std=0.1)  # not just bicubic
    lr = torch.rand(1, 3, 37, 53)
    with torch.no_grad():
        full = net(lr)
    tiled = upscale_tiled(net, lr, 4, tile=16, overlap=10)
    assert tiled.shape == full.shape == (1, 3, 148, 212)
    assert torch.allclose(tiled, full, atol=1e-5)
    assert not torch.allclose(upscale_tiled(net, lr, 4, tile=16, overlap=0), full, atol=1e-5)  # overlap matters


def _stand_in_fid_weights(path):
    """A random-init state dict of the FID Inception network's layout (the real file is pt_inception-2015-12-05)."""
    from torchvision.models.inception import Inception3

    torch.manual_seed(0)
    net = Inception3(num_classes=1008, aux_logits=False, init_weights=True)
    torch.save(net.state_dict(), path)


@pytest.mark.slow
def test_fid_network_and_distance_match_pytorch_fid(tmp_path, monkeypatch):
    """Same stand-in weights through otsr and through pytorch-fid: same pool3 features, same FID."""
    import pytorch_fid.inception as pf
    from pytorch_fid.fid_score import calculate_frechet_distance

    from otsr.metrics import Moments, frechet_from_moments

    _stand_in_fid_weights(tmp_path / "fid.pt")
    ours = FIDInception(tmp_path / "fid.pt")
    # pytorch-fid would download its weights: hand it the same local file instead (no network in tests)
    monkeypatch.setattr(pf, "load_state_dict_from_url", lambda *a, **k: torch.load(tmp_path / "fid.pt"))
    ref = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(6, 3, 48, 40, generator=g), torch.rand(6, 3, 48, 40, generator=g) ** 2
    fa, fb = ours(a), ours(b)
    with torch.no_grad():
        ra, rb = (ref(z)[0].flatten(1) for z in (a, b))
    assert fa.shape == (6, 2048)
    assert torch.allclose(fa, ra, atol=1e-5, rtol=1e-4) and torch.allclose(fb, rb, atol=1e-5, rtol=1e-4)
    # the distance itself, on features with more samples than dimensions (6 images give singular 2048-d covariances)
    za, zb = torch.randn(400, 24, generator=g).double(), (torch.randn(400, 24, generator=g) * 1.3 + 0.2).double()
    ma, mb = Moments(), Moments()
    for chunk in za.split(64):
        ma.update(chunk)
    mb.update(zb)
    expected = calculate_frechet_distance(za.mean(0).numpy(), np.cov(za.numpy(), rowvar=False),
                                          zb.mean(0).numpy(), np.cov(zb.numpy(), rowvar=False))
    assert frechet_from_moments(ma, mb) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="does not match the FID network"):
        from torchvision.models import inception_v3

        torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), tmp_path / "tv.pt")
        FIDInception(tmp_path / "tv.pt")  # torchvision's ImageNet Inception is not the FID network
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        FIDInception(tmp_path / "absent.pt")


@pytest.mark.slow
def test_lpips_through_the_package_with_a_local_backbone(tmp_path):
    import lpips
    from torchvision.models import alexnet

    torch.manual_seed(0)
    tv = alexnet(weights=None)
    torch.save(tv.state_dict(), tmp_path / "alex.pt")
    ours = LPIPSMetric(tmp_path / "alex.pt")
    # the reference: the package's own model with the same backbone copied in layer by layer
    ref = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    for k, layer in enumerate([0, 3, 6, 8, 10]):
        conv = getattr(getattr(ref.net, f"slice{k + 1}"), str(layer))
        conv.weight.data.copy_(tv.features[layer].weight.data)
        conv.bias.data.copy_(tv.features[layer].bias.data)
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(3, 3, 32, 32, generator=g), torch.rand(3, 3, 32, 32, generator=g)
    with torch.no_grad():
        expected = ref(2 * a - 1, 2 * b - 1).flatten()
    assert torch.allclose(ours(a, b), expected, atol=1e-6)
    assert float(ours(a, a).max()) == pytest.approx(0.0, abs=1e-7) and float(ours(a, b).min()) > 0
    torch.save({"classifier.1.weight": torch.zeros(1)}, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="'features.0.weight' is missing"):
        LPIPSMetric(tmp_path / "wrong.pt")


@pytest.mark.slow
def test_vgg_perceptual_cost_from_a_local_file(tmp_path):
    from torchvision.models import vgg19

    torch.save({k: v for k, v in vgg19(weights=None).state_dict().items() if k.startswith("features")},
               tmp_path / "vgg.pt")
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 32, 32, generator=g)
    assert VGGFeatures(tmp_path / "vgg.pt", layer=8)(a).shape[1] == 128
    import otsr

    pair = otsr.make_pair("degraded-images", size=16, pool=32)
    res = otsr.solve(pair, "gan", lam=1.0, perceptual_weight=0.1, perceptual_weights=str(tmp_path / "vgg.pt"),
                     steps=2, critic_steps=1, batch_size=4, width=8, eval_every=2, final_eval_samples=32,
                     device="cpu")
    assert res.status == "completed"
