"""The feature spaces a bias is measured in: raw samples when they are small; for larger images, 16x16-pooled
images (coarse content) and full-resolution high-pass patches (the fine detail that separates a blurry map's
outputs from real images). Shapes in, functions out: pairs (their headline) and evaluation both read this."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

FRECHET_MAX_DIM = 1024  # the raw-sample Fréchet distance needs a d x d covariance: images use pooled features
POOL = 16  # image samples larger than FRECHET_MAX_DIM are compared as POOL x POOL average-pooled images
DETAIL = "bias_frechet_hf"  # the view that sees fine detail: a pair that has it is judged by it
HF_PATCH, HF_SIGMA, HF_PATCHES_PER_IMAGE = 8, 1.0, 16


def feature_spaces(shape_q: tuple[int, ...]) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The generic Fréchet bias views of samples of shape ``shape_q`` (one sample of Q), by metric name."""
    if math.prod(shape_q) <= FRECHET_MAX_DIM:
        return {"bias_frechet": lambda z: z}
    if len(shape_q) == 3 and min(shape_q[1:]) >= POOL:
        return {"bias_frechet_pool16": lambda z: F.adaptive_avg_pool2d(z.float(), POOL), DETAIL: highpass_patches}
    return {}


def highpass_patches(z: torch.Tensor) -> torch.Tensor:
    """Images (n, C, H, W) -> (n * 16, C * 64): 8x8 patches, at 16 fixed positions spread over each image, of the
    high-pass band z - blur(z) (Gaussian, sigma 1 pixel, reflected edges) at full resolution."""
    z = z.float()
    c = z.shape[1]
    r = math.ceil(3 * HF_SIGMA)
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=z.device)
    k = torch.exp(-(t**2) / (2 * HF_SIGMA**2))
    k = k / k.sum()
    low = F.conv2d(F.pad(z, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    low = F.conv2d(F.pad(low, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    n, p = z.shape[0], HF_PATCH
    rows, cols = z.shape[2] // p, z.shape[3] // p
    grid = (z - low)[:, :, :rows * p, :cols * p].reshape(n, c, rows, p, cols, p)  # a view when H, W are multiples of 8
    idx = torch.linspace(0, rows * cols - 1, min(HF_PATCHES_PER_IMAGE, rows * cols), device=z.device).round().long()
    picked = grid[:, :, idx // cols, :, idx % cols, :]  # only the chosen patches: (16, n, C, 8, 8)
    return picked.permute(1, 0, 2, 3, 4).reshape(-1, c * p * p)
