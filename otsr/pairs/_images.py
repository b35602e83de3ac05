"""An image pair with a known map per sample: clean photographs Q and their degraded versions P.

P = grad psi # Q with psi(y) = 1/2 <y, K y> + (tau/k) sum softplus(k (y - 1/2)), K = (1 - eps) B^2 + eps I
and B a symmetric Gaussian blur (circular padding), so K is a positive-definite low-pass operator and psi
is strictly convex. grad psi(y) = K y + tau * sigmoid(k (y - 1/2)) blurs and compresses the contrast of an
image; its inverse, the map from degraded x to clean y, is the OT map from P to Q (Brenier). As in the
paper's benchmark, the inputs are degraded images and the targets the sharp ones.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from otsr.imageio import list_images, read_image
from otsr.pairs._base import Pair, cached_to

# The SR demo set's training photos (otsr.sr.demo) and the crops of convex-images.
DEMO_PHOTOS = ("astronaut", "rocket", "china", "immunohistochemistry", "chelsea", "hubble_deep_field", "flower",
               "retina")
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                  "retina")


def load_photos(source: str) -> list[torch.Tensor]:
    """RGB photographs as float tensors (3, H, W) in [0, 1], from ``skimage`` or a folder of images."""
    if source == "skimage":
        try:
            import skimage.data
        except ImportError as e:
            raise ImportError("image source 'skimage' needs scikit-image; pip install scikit-image, "
                              "or pass a folder of images as source") from e
        arrays = [getattr(skimage.data, name)() for name in SKIMAGE_PHOTOS]
        return [torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255 for a in arrays]
    return [read_image(f).float() / 255 for f in list_images(Path(source))]


def bundled_photo(name: str) -> torch.Tensor:
    """uint8 (3, H, W) from the sample images scikit-image ('astronaut', ...) or scikit-learn ('china', 'flower')
    ship (offline)."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        arr = load_sample_image(f"{name}.jpg")
    else:
        import skimage.data

        arr = getattr(skimage.data, name)()
    return torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)


def sample_pool(cache: dict, crops: torch.Tensor, n: int, noise: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` crops drawn with replacement from a uint8 pool (moved to the generator's device once, in ``cache``), as
    floats in [0, 1] plus N(0, noise^2) per pixel (the noise gives the crops a density)."""
    dev = generator.device
    pool = cached_to(cache, "crops", crops, dev)
    idx = torch.randint(0, pool.shape[0], (n,), generator=generator, device=dev)
    y = pool[idx].float() / 255
    return y + noise * torch.randn(y.shape, generator=generator, device=dev)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 2-D Gaussian kernel of radius ceil(3 sigma)."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k1 = torch.exp(-(t**2) / (2 * sigma**2))
    k1 = k1 / k1.sum()
    return k1[:, None] * k1[None, :]


def blur(y: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise circular convolution: a symmetric operator because the kernel is symmetric."""
    c, r = y.shape[1], kernel.shape[-1] // 2
    w = kernel.to(y.device, y.dtype).expand(c, 1, *kernel.shape)
    return F.conv2d(F.pad(y, (r, r, r, r), mode="circular"), w, groups=c)


@dataclasses.dataclass(repr=False)
class DegradedImages(Pair):
    """Q: random crops of real photographs (+ tiny noise); P: grad psi of Q (blur + contrast squeeze)."""

    name = "degraded-images"
    dim_range = (8, 256)  # crop side

    source: str = "skimage"  # 'skimage' (photos shipped with scikit-image) or a folder of images
    size: int = 32  # crop side in pixels; one sample is (3, size, size)
    image_side: int = 0  # photos are resized to this short side before cropping (0: 4 * size)
    pool: int = 8192  # crops extracted once from the photos (sampled with replacement)
    sigma: float = 1.5  # blur width of K = B^2 in pixels
    eps: float = 0.1  # identity share of K, keeps grad psi invertible
    tau: float = 0.2  # strength of the contrast non-linearity
    sharpness: float = 4.0  # k in sigmoid(k (y - 1/2))
    noise: float = 0.01  # std of the noise that gives Q a density
    seed: int = 0  # picks the crops

    def __post_init__(self):
        self.check_dim(self.size, key="size")
        for key in ("sigma", "tau", "sharpness"):
            if not getattr(self, key) > 0:
                raise ValueError(f"pair {self.name!r}: {key}={getattr(self, key)} must be > 0")
        if not 0 < self.eps <= 1:
            raise ValueError(f"pair {self.name!r}: eps={self.eps} must be in (0, 1]")
        self._cache: dict = {}
        self.crops = self._extract_crops(load_photos(self.source))
        c = self.crops.float() / 255
        self._var_q = float(c.flatten(1).var(0, unbiased=False).sum()) + self.noise**2 * c[0].numel()
        self.kernel = gaussian_kernel(self.sigma / math.sqrt(2))

    def _extract_crops(self, photos: list[torch.Tensor]) -> torch.Tensor:
        """``pool`` random crops (uint8, with flips) spread evenly over the photos."""
        side = self.image_side or 4 * self.size
        g = torch.Generator().manual_seed(self.seed)
        crops = []
        for i, img in enumerate(photos):
            h, w = img.shape[1:]
            s = side / min(h, w)
            img = F.interpolate(img[None], size=(max(self.size, round(h * s)), max(self.size, round(w * s))),
                                mode="bilinear", antialias=True, align_corners=False)[0]
            n = self.pool // len(photos) + (i < self.pool % len(photos))
            ys = torch.randint(0, img.shape[1] - self.size + 1, (n,), generator=g)
            xs = torch.randint(0, img.shape[2] - self.size + 1, (n,), generator=g)
            flip = torch.rand(n, generator=g) < 0.5
            for y0, x0, f in zip(ys.tolist(), xs.tolist(), flip.tolist()):
                c = img[:, y0:y0 + self.size, x0:x0 + self.size]
                crops.append(c.flip(-1) if f else c)
        return (torch.stack(crops).clamp(0, 1) * 255).round().to(torch.uint8)

    @property
    def shape(self) -> tuple[int, ...]:
        """One sample is an RGB image (3, size, size) with values near [0, 1]."""
        return (3, self.size, self.size)

    def degrade(self, y: torch.Tensor) -> torch.Tensor:
        """grad psi(y) = (1 - eps) B(B(y)) + eps y + tau sigmoid(k (y - 1/2))."""
        k = cached_to(self._cache, "kernel", self.kernel, y.device)
        low = blur(blur(y, k), k)
        return (1 - self.eps) * low + self.eps * y + self.tau * torch.sigmoid(self.sharpness * (y - 0.5))

    def sample_q(self, n, generator):
        """Pool crops plus N(0, noise^2) per pixel."""
        return sample_pool(self._cache, self.crops, n, self.noise, generator)

    def sample_p(self, n, generator):
        """Degraded versions of fresh Q samples."""
        return self.degrade(self.sample_q(n, generator))

    def sample_with_target(self, n, generator):
        """x = grad psi(y) with y ~ Q, and the target y = T*(x)."""
        y = self.sample_q(n, generator)
        return self.degrade(y), y

    def var_q(self) -> float:
        """Per-pixel variance of the crop pool summed over pixels, plus the noise."""
        return self._var_q
