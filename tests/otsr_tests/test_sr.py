"""Unpaired super-resolution: data, metrics, trainers on the demo set, tiled upscaling, pretrained-weight paths
(tested with small stand-in weight files: random-init torchvision models saved locally)."""

import json

import pytest
import torch
from torchvision.io import write_png

from otsr.cli import main
from otsr.models import EDSR
from otsr.sr.data import CropStream, DataError, check_min_size, list_images, paired_validation
from otsr.sr.demo import build_demo
from otsr.sr.metrics import LPIPS, InceptionFeatures, VGGFeatures, fid, psnr, ssim
from otsr.sr.pair import UnpairedSR
from otsr.sr.upscale import upscale_tiled


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return build_demo(tmp_path_factory.mktemp("demo") / "sr_demo")


def _png(path, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    write_png(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8), str(path))


def test_demo_split_is_unpaired_by_source_photo(demo):
    hr, lr = list_images(demo / "train_hr"), list_images(demo / "train_lr")
    sources = lambda files: {f.stem.rsplit("_", 1)[0] for f in files}  # noqa: E731
    assert not sources(hr) & sources(lr)  # no photo gives both HR and LR training images
    valid = paired_validation(demo / "valid_lr", demo / "valid_hr", 4)
    assert valid and not sources([h for _, h in valid]) & (sources(hr) | sources(lr))


def test_edsr_and_pair_shapes(demo):
    net = EDSR(features=8, blocks=2, scale=4)
    assert net(torch.rand(2, 3, 8, 12)).shape == (2, 3, 32, 48)
    pair = UnpairedSR(root=str(demo), hr_crop=32, workers=0)
    g = torch.Generator()
    assert pair.sample_p(5, g).shape == (5, 3, 8, 8) and pair.sample_q(5, g).shape == (5, 3, 32, 32)
    x = pair.sample_p(3, g)
    assert 0 <= float(x.min()) and float(x.max()) <= 1


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
def test_short_sr_training_on_the_demo_set(demo, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--pair", "sr-folders", "--pair-param", f"root={demo}", "--pair-param", "hr_crop=32",
                 "--pair-param", "workers=0", "--method", "ots", "--cost", "half_mean", "--map-steps", "3",
                 "--steps", "6", "--batch-size", "4", "--width", "8", "--depth", "2", "--eval-every", "3",
                 "--log-every", "3", "--final-eval-samples", "32", "--device", "cpu", "--out", str(out)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    m = printed["metrics"]
    assert {"psnr", "ssim", "psnr_bicubic", "ssim_bicubic", "bias_frechet_pool16"} <= set(m)
    assert m["psnr"] == pytest.approx(m["psnr_bicubic"], abs=3.0)  # EDSR starts at bicubic
    assert "fid" in printed["unavailable"] and "lpips" in printed["unavailable"] and "fid" not in m
    assert (out / "map.png").stat().st_size > 1000
    written = main(["upscale", str(demo / "valid_lr" / sorted(p.name for p in (demo / "valid_lr").iterdir())[0]),
                    "--checkpoint", str(out), "--out", str(tmp_path / "up"), "--tile", "16", "--device", "cpu"])
    assert written == 0 and len(list((tmp_path / "up").glob("*_x4.png"))) == 1


def test_tiled_upscale_equals_untiled():
    torch.manual_seed(0)
    net = EDSR(features=8, blocks=2, scale=4).eval()
    torch.nn.init.normal_(net.tail.weight, std=0.1)  # not just bicubic
    lr = torch.rand(1, 3, 37, 53)
    with torch.no_grad():
        full = net(lr)
    tiled = upscale_tiled(net, lr, 4, tile=16, overlap=10)
    assert tiled.shape == full.shape == (1, 3, 148, 212)
    assert torch.allclose(tiled, full, atol=1e-5)
    assert not torch.allclose(upscale_tiled(net, lr, 4, tile=16, overlap=0), full, atol=1e-5)  # overlap matters


@pytest.mark.slow
def test_fid_lpips_and_vgg_from_local_stand_in_weights(tmp_path):
    from torchvision.models import alexnet, inception_v3, vgg19

    torch.manual_seed(0)
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), tmp_path / "inc.pt")
    torch.save(alexnet(weights=None).state_dict(), tmp_path / "alex.pt")
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate((64, 192, 384, 256, 256))},
               tmp_path / "lin.pt")
    torch.save({k: v for k, v in vgg19(weights=None).state_dict().items() if k.startswith("features")},
               tmp_path / "vgg.pt")
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(6, 3, 32, 32, generator=g), torch.rand(6, 3, 32, 32, generator=g) * 0.5
    inc = InceptionFeatures(tmp_path / "inc.pt")
    assert fid(inc, a, a) == pytest.approx(0.0, abs=1e-3) and fid(inc, a, b) > 0
    lp = LPIPS(tmp_path / "alex.pt", tmp_path / "lin.pt")
    assert float(lp(a, a).max()) == pytest.approx(0.0, abs=1e-6) and float(lp(a, b).min()) > 0
    vgg = VGGFeatures(tmp_path / "vgg.pt", layer=8)
    assert vgg(a).shape[1] == 128
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        InceptionFeatures(tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="lin0 weight missing"):
        torch.save({}, tmp_path / "empty.pt")
        LPIPS(tmp_path / "alex.pt", tmp_path / "empty.pt")
    # a training run with the perceptual cost, through the trainer config
    import otsr

    pair = otsr.make_pair("degraded-images", size=16, pool=32)
    res = otsr.solve(pair, "gan", lam=1.0, perceptual_weight=0.1, perceptual_weights=str(tmp_path / "vgg.pt"),
                     steps=2, critic_steps=1, batch_size=4, width=8, eval_every=2, final_eval_samples=32,
                     device="cpu")
    assert res.status == "completed"
