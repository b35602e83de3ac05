"""Networks for maps T and critics/potentials f: an MLP for vectors, a UNet and a ResNet critic for images.

Models are built by name through ``build_model`` (unknown names raise listing the valid ones).
Maps are residual (T(x) = x + net(x), last layer zero-initialised) so training starts at the identity,
which is where a content cost pulls them anyway.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class MLP(nn.Module):
    """``depth`` hidden layers of ``width`` units with ReLU; optionally residual around the whole net.

    ReLU, not a smooth activation: piecewise-linear WGAN-GP critics land on the linear-critic equilibrium of
    ``otsr.theory`` (measured: shift 1.15 vs s_GP 1.143 at lambda = 8; SiLU critics settled near 1.23).
    """

    def __init__(self, dim: int, out: int, width: int = 128, depth: int = 3, residual: bool = False):
        super().__init__()
        layers, d = [], dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, out)
        self.residual = residual
        if residual:  # start at the identity map
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x):
        """Vectors (n, dim) -> (n, out)."""
        h = self.head(self.body(x))
        return x + h if self.residual else h


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(min(8, cout), cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(min(8, cout), cout), nn.SiLU())


class UNet(nn.Module):
    """A small UNet (``levels`` downsamplings, widths base * 2^i) with a residual output."""

    def __init__(self, channels: int = 3, base: int = 32, levels: int = 3):
        super().__init__()
        widths = [base * 2**i for i in range(levels + 1)]
        self.stem = nn.Conv2d(channels, base, 3, padding=1)
        self.down = nn.ModuleList(_conv_block(widths[max(i - 1, 0)], widths[i]) for i in range(levels))
        self.pool = nn.AvgPool2d(2)
        self.mid = _conv_block(widths[levels - 1], widths[levels])
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(levels))
        self.dec = nn.ModuleList(_conv_block(2 * widths[i], widths[i]) for i in range(levels))
        self.out = nn.Conv2d(base, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.levels = levels

    def forward(self, x):
        """Images (n, C, H, W) with H, W divisible by 2^levels -> same shape."""
        h, skips = self.stem(x), []
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.mid(h)
        for i in reversed(range(self.levels)):
            h = self.dec[i](torch.cat([self.up[i](h), skips[i]], 1))
        return x + self.out(h)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        return self.skip(x) + 0.1 * self.body(x)


class ResNetCritic(nn.Module):
    """ResNet critic (WGAN-QC style): residual blocks with average pooling down to 4x4, then linear.

    No normalisation layers, so the gradient penalty acts per sample.
    """

    def __init__(self, channels: int = 3, size: int = 64, base: int = 32, max_width: int = 256):
        super().__init__()
        layers, c, s = [nn.Conv2d(channels, base, 3, padding=1)], base, size
        while s > 4:
            nxt = min(max_width, c * 2)
            layers += [_ResBlock(c, nxt), nn.AvgPool2d(2)]
            c, s = nxt, s // 2
        layers += [_ResBlock(c, c), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c * s * s, 1)

    def forward(self, x):
        """Images (n, C, size, size) -> scores (n,)."""
        return self.head(self.body(x).flatten(1)).squeeze(1)


class Critic(nn.Module):
    """Scalar-valued MLP f(x) for vectors."""

    def __init__(self, dim: int, width: int = 128, depth: int = 3):
        super().__init__()
        self.net = MLP(dim, 1, width, depth)

    def forward(self, x):
        """(n, dim) -> (n,)."""
        return self.net(x).squeeze(1)


class _EDSRBlock(nn.Module):
    def __init__(self, features: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(features, features, 3, padding=1))
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.res_scale * self.body(x)


class EDSR(nn.Module):
    """EDSR super-resolution map: residual blocks without normalisation, pixel-shuffle upsampling by ``scale``.

    Predicts a residual over the bicubic upsampling of the input, so training starts at bicubic.
    """

    def __init__(self, channels: int = 3, features: int = 64, blocks: int = 16, scale: int = 4,
                 res_scale: float = 0.1):
        super().__init__()
        if scale & (scale - 1) or scale < 2:
            raise ValueError(f"EDSR scale={scale} must be a power of 2 >= 2")
        self.scale = scale
        self.head = nn.Conv2d(channels, features, 3, padding=1)
        self.body = nn.Sequential(*[_EDSRBlock(features, res_scale) for _ in range(blocks)],
                                  nn.Conv2d(features, features, 3, padding=1))
        up = []
        for _ in range(scale.bit_length() - 1):
            up += [nn.Conv2d(features, 4 * features, 3, padding=1), nn.PixelShuffle(2)]
        self.up = nn.Sequential(*up)
        self.tail = nn.Conv2d(features, channels, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x):
        """LR images (n, C, h, w) -> (n, C, scale h, scale w)."""
        h = self.head(x)
        h = self.up(h + self.body(h))
        base = nn.functional.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return base + self.tail(h)


MAPS = ("mlp", "unet", "edsr")
CRITICS = ("mlp", "resnet")


def default_models(shape: tuple[int, ...], shape_q: tuple[int, ...] | None = None) -> tuple[str, str]:
    """(map, critic) names: MLPs for vectors, UNet + ResNet for images, EDSR + ResNet for super-resolution."""
    if len(shape) == 1:
        return "mlp", "mlp"
    return ("edsr" if shape_q is not None and tuple(shape_q) != tuple(shape) else "unet"), "resnet"


def default_width(name: str) -> int:
    """Width used when the config says 0: hidden units (MLP), base channels (UNet, ResNet), features (EDSR)."""
    return {"mlp": 128, "edsr": 64}.get(name, 32)


def build_map(name: str, shape: tuple[int, ...], width: int, depth: int,
              shape_q: tuple[int, ...] | None = None) -> nn.Module:
    """The map T from samples of ``shape`` to samples of ``shape_q`` (default: the same shape)."""
    shape_q = tuple(shape_q or shape)
    if name == "edsr":
        if len(shape) != 3 or shape_q[1] % shape[1] or shape_q[1] // shape[1] < 2:
            raise ValueError(f"model 'edsr' maps small images to larger ones, not {shape} -> {shape_q}")
        return EDSR(shape[0], features=width, blocks=depth, scale=shape_q[1] // shape[1])
    if shape_q != tuple(shape):
        raise ValueError(f"model {name!r} keeps the sample shape; {shape} -> {shape_q} needs 'edsr'")
    if name == "mlp":
        return MLP(math.prod(shape), math.prod(shape), width, depth, residual=True) if len(shape) == 1 else \
            _bad_shape(name, shape)
    if name == "unet":
        return UNet(shape[0], base=width, levels=depth) if len(shape) == 3 else _bad_shape(name, shape)
    raise ValueError(f"unknown map model {name!r}; valid: {', '.join(MAPS)}")


def build_critic(name: str, shape: tuple[int, ...], width: int, depth: int) -> nn.Module:
    """The critic / potential f for samples of ``shape``."""
    if name == "mlp":
        return Critic(math.prod(shape), width, depth) if len(shape) == 1 else _bad_shape(name, shape)
    if name == "resnet":
        return ResNetCritic(shape[0], shape[1], base=width) if len(shape) == 3 else _bad_shape(name, shape)
    raise ValueError(f"unknown critic model {name!r}; valid: {', '.join(CRITICS)}")


def _bad_shape(name: str, shape: tuple[int, ...]):
    raise ValueError(f"model {name!r} does not take samples of shape {shape}")
