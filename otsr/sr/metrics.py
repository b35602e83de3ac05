"""SR metrics: PSNR and SSIM (as scikit-image computes them) on RGB in [0, 1]; FID, LPIPS and the VGG
perceptual cost from pretrained weights the user keeps in local files (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from otsr.metrics import frechet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


def _load_state(path: str | Path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found at {path} (give a local file; nothing is downloaded)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _imagenet_norm(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class InceptionFeatures(nn.Module):
    """Inception-v3 pool3 features (2048-d) from a local torchvision ``inception_v3`` state dict (for FID)."""

    def __init__(self, weights: str | Path):
        super().__init__()
        from torchvision.models import inception_v3

        net = inception_v3(weights=None, aux_logits=True, init_weights=False)
        net.load_state_dict(_load_state(weights, "Inception-v3"))
        net.fc = nn.Identity()
        net.aux_logits, net.AuxLogits = False, None
        self.net = net.eval().requires_grad_(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (n, 3, H, W) in [0, 1] -> (n, 2048)."""
        x = F.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False)
        return self.net(_imagenet_norm(x))


def fid(features: nn.Module, a: torch.Tensor, b: torch.Tensor, batch: int = 64) -> float:
    """Fréchet Inception Distance between two image batches in [0, 1]."""
    fa = torch.cat([features(a[i:i + batch]) for i in range(0, len(a), batch)])
    fb = torch.cat([features(b[i:i + batch]) for i in range(0, len(b), batch)])
    return frechet(fa, fb)


ALEX_RELU = (1, 4, 7, 9, 11)  # relu1..relu5 in torchvision's alexnet.features
ALEX_CHANNELS = (64, 192, 384, 256, 256)


class LPIPS(nn.Module):
    """LPIPS (AlexNet variant) from local files: torchvision ``alexnet`` weights and the 5 linear heads.

    The heads file holds ``lin{i}.model.1.weight`` (the lpips package's names) or ``lin{i}.weight``,
    each of shape (1, C_i, 1, 1).
    """

    shift = (-0.030, -0.088, -0.188)
    scale = (0.458, 0.448, 0.450)

    def __init__(self, alexnet_weights: str | Path, lin_weights: str | Path):
        super().__init__()
        from torchvision.models import alexnet

        net = alexnet(weights=None)
        net.load_state_dict(_load_state(alexnet_weights, "AlexNet"))
        self.features = net.features[: ALEX_RELU[-1] + 1].eval().requires_grad_(False)
        lins = _load_state(lin_weights, "LPIPS linear heads")
        self.lins = []
        for i, c in enumerate(ALEX_CHANNELS):
            w = lins.get(f"lin{i}.model.1.weight", lins.get(f"lin{i}.weight"))
            if w is None or tuple(w.shape) != (1, c, 1, 1):
                raise ValueError(f"LPIPS heads file {lin_weights}: lin{i} weight missing or not (1, {c}, 1, 1)")
            self.register_buffer(f"lin{i}", w.float())
            self.lins.append(f"lin{i}")

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-image distance of batches in [0, 1]."""
        shift = torch.tensor(self.shift, device=a.device).view(1, 3, 1, 1)
        scale = torch.tensor(self.scale, device=a.device).view(1, 3, 1, 1)
        ha, hb = ((2 * a.float() - 1) - shift) / scale, ((2 * b.float() - 1) - shift) / scale
        total = torch.zeros(a.shape[0], device=a.device)
        for i, layer in enumerate(self.features):
            ha, hb = layer(ha), layer(hb)
            if i in ALEX_RELU:
                k = ALEX_RELU.index(i)
                na = ha / (ha.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                nb = hb / (hb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
                total += F.conv2d((na - nb).pow(2), getattr(self, self.lins[k])).mean((1, 2, 3))
        return total


class VGGFeatures(nn.Module):
    """VGG-19 features up to ``layer`` (default relu5_4) from a local torchvision ``vgg19`` state dict."""

    def __init__(self, weights: str | Path, layer: int = 35):
        super().__init__()
        from torchvision.models import vgg19

        net = vgg19(weights=None)
        state = _load_state(weights, "VGG-19")
        feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        if not feats:
            raise ValueError(f"VGG-19 weights file {weights} has no 'features.*' entries")
        net.features.load_state_dict(feats)  # the classifier is not needed (and may be left out of the file)
        self.features = net.features[: layer + 1].eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> feature maps (gradients flow to ``x`` for a perceptual cost)."""
        return self.features(_imagenet_norm(x.float()))
