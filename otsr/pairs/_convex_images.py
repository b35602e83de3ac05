"""An image pair with a known OT map, built as the Wasserstein-2 benchmark builds its image pairs: natural image
crops and the gradient of a convex function made of a quadratic and a convolutional input-convex network.

    psi(y) = 1/2 alpha |y|^2 + tau c sum_{pixels} LSE_s(A * y + b) - <m, y>,

with ``*`` a 3x3 convolution and LSE_s(u) = log sum_channels exp(s u) / s, a convex, non-decreasing function
of the responses (the smooth maximum over channels: a one-layer convolutional input-convex network), so psi is
convex and grad psi is the quadratic-cost OT map from any P with a density to grad psi # P (Brenier). The
filters are drawn per seed (never trained), zero-mean and scaled to unit response; the biases sit at the median
response over the crop pool, so every unit wins on some images and the map is far from affine (a random ICNN
with unscaled biases is nearly affine, which would make the pair useless). c puts the convex part's gradient on
the crops' scale and m centres it (a linear term keeps psi convex).

Orientation ``push``: P = the crops (+ tiny noise), T* = grad psi. Orientation ``restore`` (the benchmark's and
SR's): y ~ crops, x = grad psi(y) is a degraded image, T*(x) = y. Either way every sample comes with its
target, so L2-UVP and cos are exact.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from otsr.pairs._base import Pair, cached_to
from otsr.pairs._images import DEMO_PHOTOS, bundled_photo, sample_pool

ORIENTATIONS = ("push", "restore")
WIDTH = 16  # channels of the ICNN's convolution
CALIBRATION = 512  # crops that set the biases


def demo_photos() -> list[torch.Tensor]:
    """The SR demo's training photos as float (3, H, W) in [0, 1] (scikit-image / scikit-learn, offline)."""
    return [bundled_photo(name).float() / 255 for name in DEMO_PHOTOS]


def crop_pool(photos: list[torch.Tensor], size: int, n: int, shrink: int, seed: int) -> torch.Tensor:
    """``n`` random ``size`` x ``size`` crops (uint8, random flips) spread over the photos, each photo first shrunk
    by ``shrink`` (so a crop holds a scene, not a few pixels of texture)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, img in enumerate(photos):
        h, w = img.shape[1:]
        img = F.interpolate(img[None], size=(max(size, h // shrink), max(size, w // shrink)), mode="bilinear",
                            antialias=True, align_corners=False)[0]
        m = n // len(photos) + (i < n % len(photos))
        ys = torch.randint(0, img.shape[1] - size + 1, (m,), generator=g)
        xs = torch.randint(0, img.shape[2] - size + 1, (m,), generator=g)
        flip = torch.rand(m, generator=g) < 0.5
        for y0, x0, f in zip(ys.tolist(), xs.tolist(), flip.tolist()):
            c = img[:, y0:y0 + size, x0:x0 + size]
            out.append(c.flip(-1) if f else c)
    return (torch.stack(out).clamp(0, 1) * 255).round().to(torch.uint8)


@dataclasses.dataclass(repr=False)
class ConvexImages(Pair):
    """Image crops and grad psi of a quadratic + convolutional ICNN (see the module docstring)."""

    name = "convex-images"
    dim_range = (8, 64)  # crop side

    size: int = 16  # crop side in pixels; one sample is (3, size, size)
    orientation: str = "push"  # 'push': P = crops, Q = grad psi # P; 'restore': P = grad psi(crops), Q = crops
    alpha: float = 0.5  # weight of the quadratic 1/2 |y|^2
    tau: float = 1.0  # weight of the ICNN part
    sharpness: float = 8.0  # s of LSE_s: larger is closer to a hard maximum over channels (more non-linear)
    shrink: int = 4  # photos are shrunk by this factor before cropping
    pool: int = 8192  # crops cut once from the photos (sampled with replacement)
    noise: float = 0.01  # std of the noise that gives the crops a density
    seed: int = 0  # draws the ICNN weights and the crops

    def __post_init__(self):
        self.check_dim(self.size, key="size")
        if self.orientation not in ORIENTATIONS:
            raise ValueError(f"pair {self.name!r}: orientation={self.orientation!r}; valid: {', '.join(ORIENTATIONS)}")
        for key in ("alpha", "tau", "sharpness"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"pair {self.name!r}: {key}={v!r} must be a positive number")
        if isinstance(self.shrink, bool) or not isinstance(self.shrink, int) or self.shrink < 1:
            raise ValueError(f"pair {self.name!r}: shrink={self.shrink!r} must be an integer >= 1")
        if isinstance(self.pool, bool) or not isinstance(self.pool, int) or self.pool < 64:
            raise ValueError(f"pair {self.name!r}: pool={self.pool!r} must be an integer >= 64")
        self._cache: dict = {}
        self.crops = crop_pool(demo_photos(), self.size, self.pool, self.shrink, self.seed)
        g = torch.Generator().manual_seed(self.seed + 1)
        a1 = torch.randn(WIDTH, 3, 3, 3, generator=g)
        w = {"a1": a1 - a1.mean((1, 2, 3), keepdim=True)}  # no response to flat brightness: structure decides
        y = self.crops[:CALIBRATION].float() / 255
        u1 = F.conv2d(y, w["a1"])
        w["a1"] = w["a1"] / u1.transpose(0, 1).flatten(1).std(1)[:, None, None, None]  # unit-scale responses
        w["b1"] = -F.conv2d(y, w["a1"]).transpose(0, 1).flatten(1).median(1).values  # centred: every unit wins
        self.weights = w
        # Put the ICNN's gradient on the crops' scale and centre it: tau is then the share of the non-linear part,
        # and subtracting a constant from grad psi (a linear term of psi) keeps psi convex.
        self._icnn_scale, self._shift = 1.0, torch.zeros(self.shape)
        gy = self._icnn_grad(y)
        self._icnn_scale = float(y.std(0).mean() / gy.std(0).mean())
        self._shift = (self.tau * self._icnn_scale * gy).mean(0)
        self._var_q: float | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """One sample is an RGB image (3, size, size) with values near [0, 1]."""
        return (3, self.size, self.size)

    def icnn(self, y: torch.Tensor) -> torch.Tensor:
        """The convolutional ICNN part per image (unscaled), (N, 3, s, s) -> (N,)."""
        w = {k: cached_to(self._cache, k, v, y.device) for k, v in self.weights.items()}
        u1 = F.conv2d(y, w["a1"], padding=1) + w["b1"][:, None, None]
        return (torch.logsumexp(self.sharpness * u1, dim=1) / self.sharpness).flatten(1).sum(1)

    def _icnn_grad(self, y: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            return torch.autograd.grad(self.icnn(y).sum(), y)[0].detach()

    def psi(self, y: torch.Tensor) -> torch.Tensor:
        """The potential: 1/2 alpha |y|^2 + tau c ICNN(y) - <shift, y> per image (c: the calibrated scale), (N,)."""
        shift = cached_to(self._cache, "shift", self._shift, y.device)
        return (0.5 * self.alpha * y.flatten(1).pow(2).sum(1) + self.tau * self._icnn_scale * self.icnn(y)
                - (y * shift).flatten(1).sum(1))

    def grad_psi(self, y: torch.Tensor) -> torch.Tensor:
        """grad psi(y) = alpha y + tau c grad ICNN(y) - shift (works under no_grad too)."""
        shift = cached_to(self._cache, "shift", self._shift, y.device)
        return self.alpha * y + self.tau * self._icnn_scale * self._icnn_grad(y) - shift

    def sample_with_target(self, n, generator):
        """x ~ P with T*(x): (crop, grad psi(crop)) for 'push', (grad psi(crop), crop) for 'restore'."""
        y = sample_pool(self._cache, self.crops, n, self.noise, generator)
        return (y, self.grad_psi(y)) if self.orientation == "push" else (self.grad_psi(y), y)

    def sample_p(self, n, generator):
        """Crops ('push') or their images under grad psi ('restore')."""
        return self.sample_with_target(n, generator)[0]

    def sample_q(self, n, generator):
        """grad psi of fresh crops ('push') or fresh crops ('restore')."""
        return self.sample_with_target(n, generator)[1]

    def var_q(self) -> float:
        """Estimated once on 8,192 samples of Q with a fixed seed."""
        if self._var_q is None:
            y = self.sample_q(8192, torch.Generator().manual_seed(12345)).flatten(1).double()
            self._var_q = float((y - y.mean(0)).pow(2).sum(1).mean())
        return self._var_q


__all__ = ["ConvexImages"]
