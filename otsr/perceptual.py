"""The VGG perceptual part of the SR content cost, from a local torchvision ``vgg19`` state dict."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from otsr.checkpoint import load_weights
from otsr.costs import upsample_like

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGFeatures(nn.Module):
    """VGG-19 features up to ``layer`` (default relu5_4) from a local torchvision ``vgg19`` state dict."""

    def __init__(self, weights: str | Path, layer: int = 35):
        super().__init__()
        from torchvision.models import vgg19

        net = vgg19(weights=None)
        state = load_weights(weights, "VGG-19")
        feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        if not feats:
            raise ValueError(f"VGG-19 weights file {weights} has no 'features.*' entries")
        net.features.load_state_dict(feats)  # the classifier is not needed (and may be left out of the file)
        self.features = net.features[: layer + 1].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> feature maps (gradients flow to ``x`` for a perceptual cost)."""
        return self.features((x.float() - self.mean) / self.std)


class PerceptualCost(nn.Module):
    """Per-sample MSE between VGG features of T(x) and of x (bicubic-upsampled to T(x)'s size for SR)."""

    def __init__(self, weights: str | Path):
        super().__init__()
        self.vgg = VGGFeatures(weights)

    def forward(self, x: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
        """(n,) costs."""
        if x.ndim != 4:
            raise ValueError("a perceptual (VGG) cost needs image samples")
        fx, ftx = self.vgg(upsample_like(x, tx)), self.vgg(tx)
        return (ftx.float() - fx.float()).pow(2).flatten(1).mean(1)
