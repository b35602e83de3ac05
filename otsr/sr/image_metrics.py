"""SR metrics: PSNR and SSIM (as scikit-image computes them) on RGB in [0, 1]; FID through the FID Inception
network and LPIPS through the ``lpips`` package, from pretrained weights the user keeps in local files
(nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import inception

from otsr.checkpoint import load_weights


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB of batches (n, C, H, W): 10 log10(range^2 / MSE)."""
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, win_size: int = 7) -> torch.Tensor:
    """Per-image SSIM, matching ``skimage.metrics.structural_similarity(channel_axis=...)`` defaults.

    Uniform 7x7 window, sample covariance, K1 = 0.01, K2 = 0.03, mean over the valid interior and channels.
    """
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    if min(a.shape[-2:]) < win_size:
        raise ValueError(f"ssim: images of {tuple(a.shape[-2:])} are smaller than the {win_size}x{win_size} window")
    x, y = a.double(), b.double()
    n, c = x.shape[:2]
    x, y = x.reshape(n * c, 1, *x.shape[-2:]), y.reshape(n * c, 1, *y.shape[-2:])

    def mean(t):
        return F.avg_pool2d(t, win_size, stride=1)  # the valid interior only: skimage crops the border

    ux, uy = mean(x), mean(y)
    norm = win_size**2 / (win_size**2 - 1)
    vx, vy, vxy = norm * (mean(x * x) - ux * ux), norm * (mean(y * y) - uy * uy), norm * (mean(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).reshape(n, c).mean(1)


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow's 3x3 average pool: padded zeros do not count in the average (the FID network's pooling)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _FIDBlockA(inception.InceptionA):
    def _forward(self, x):
        return [self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))), self.branch_pool(_tf_avg_pool(x))]


class _FIDBlockC(inception.InceptionC):
    def _forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            d = layer(d)
        return [self.branch1x1(x), b7, d, self.branch_pool(_tf_avg_pool(x))]


class _FIDBlockE(inception.InceptionE):
    """The last two Inception blocks; the FID network's final one max-pools its pool branch."""

    def __init__(self, in_channels: int, max_pool: bool):
        super().__init__(in_channels)
        self.max_pool = max_pool

    def _forward(self, x):
        a = self.branch3x3_1(x)
        b = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return [self.branch1x1(x), torch.cat([self.branch3x3_2a(a), self.branch3x3_2b(a)], 1),
                torch.cat([self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b)], 1), self.branch_pool(pooled)]


class FIDInception(nn.Module):
    """The Inception network of TensorFlow's FID (pool3, 2048-d), as SR and GAN papers compute FID.

    Its weights are the ``pt_inception-2015-12-05`` state dict that pytorch-fid publishes; give the local file.
    It differs from torchvision's ImageNet Inception-v3 (1008 classes, TF-style average pools, a max pool in the
    last block), so torchvision weights do not fit. Inputs in [0, 1] are resized bilinearly to 299 x 299.
    """

    def __init__(self, weights: str | Path):
        super().__init__()
        net = inception.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = _FIDBlockA(192, 32), _FIDBlockA(256, 64), _FIDBlockA(288, 64)
        net.Mixed_6b, net.Mixed_6c = _FIDBlockC(768, 128), _FIDBlockC(768, 160)
        net.Mixed_6d, net.Mixed_6e = _FIDBlockC(768, 160), _FIDBlockC(768, 192)
        net.Mixed_7b, net.Mixed_7c = _FIDBlockE(1280, max_pool=False), _FIDBlockE(2048, max_pool=True)
        try:
            net.load_state_dict(load_weights(weights, "FID Inception"))
        except RuntimeError as e:
            raise ValueError(f"FID Inception weights file {weights} does not match the FID network "
                             f"(pt_inception-2015-12-05 expected): {str(e).splitlines()[0]}") from None
        pool = nn.MaxPool2d(3, stride=2)
        self.body = nn.Sequential(net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, pool,
                                  net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, pool, net.Mixed_5b, net.Mixed_5c,
                                  net.Mixed_5d, net.Mixed_6a, net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e,
                                  net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, nn.AdaptiveAvgPool2d(1))
        self.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (n, 3, H, W) in [0, 1] -> pool3 features (n, 2048), in fp32 whatever the caller's autocast."""
        with torch.autocast(x.device.type, enabled=False):
            x = F.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False)
            return self.body(2 * x - 1).flatten(1)


class LPIPSMetric(nn.Module):
    """LPIPS (AlexNet) through the ``lpips`` package: its linear heads ship with the wheel, the AlexNet backbone
    comes from a local torchvision ``alexnet`` state dict (the package would otherwise download it)."""

    def __init__(self, alexnet_weights: str | Path):
        super().__init__()
        try:
            import lpips
        except ImportError as e:
            raise ImportError("LPIPS needs the lpips package: pip install 'otsr[metrics]' (or lpips==0.1.4)") from e
        import warnings

        with warnings.catch_warnings():  # lpips builds torchvision's alexnet with the deprecated 'pretrained':
            # only torchvision's two deprecation notices for that call are silenced, nothing else
            warnings.filterwarnings("ignore", message=r"The parameter 'pretrained' is deprecated", category=UserWarning)
            warnings.filterwarnings("ignore", message=r"Arguments other than a weight enum", category=UserWarning)
            self.model = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
        features = {k[len("features."):]: v for k, v in load_weights(alexnet_weights, "AlexNet").items()
                    if k.startswith("features.")}
        backbone = {}
        for key in self.model.net.state_dict():  # 'slice2.3.weight' holds alexnet 'features.3.weight'
            idx = key.split(".", 1)[1]
            if idx not in features:
                raise ValueError(f"AlexNet weights file {alexnet_weights}: 'features.{idx}' is missing")
            backbone[key] = features[idx]
        self.model.net.load_state_dict(backbone)
        self.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-image distance of batches in [0, 1]."""
        with torch.autocast(a.device.type, enabled=False):
            return self.model(a.float(), b.float(), normalize=True).flatten()
