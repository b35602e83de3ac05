"""Networks for maps T and critics/potentials f, and the wrappers that put them in the data's units.

Networks: a residual MLP with LayerNorm (vector maps), a ReLU MLP (vector critics and potentials), a UNet
(image maps), a ResNet critic (images) and EDSR (super-resolution maps). Image maps split into a fixed
``base`` (identity, bicubic) and a learned ``residual`` whose last layer starts at zero.

Wrappers (why training converges at D = 64 and on SR; see README "OTS at scale"):
- ``TransportMap``: T(x) = base(x) + s_q * net((x - m_p) / s_p). Vectors start at the closed-form Gaussian
  (Bures) OT map between Gaussian fits of P and Q (``warm_start``), and the network sees whitened-scale inputs
  and answers in Q's units.
- ``Potential``: f(y) = f0(y) + scale * net((y - m_q) / s_q). For OTS, f0 is the potential that makes the
  Bures map optimal and scale = 2 kappa s_q^2 puts the learned part in the cost's units, so a young
  potential cannot drag the map off the content (the SR failure: kappa = 1/(2*3*128^2) against an O(1)
  network). The potential's class is unconstrained, so the OTS objective is unchanged; only its
  parametrization is.
- Both run their network under the resolved precision (bf16 autocast or fp32) and return fp32: bases,
  potential values, costs and losses stay fp32.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from otsr.config import CRITIC_MODELS, MAP_MODELS
from otsr.costs import kappa as cost_kappa
from otsr.warm_start import GaussianFit


class MLP(nn.Module):
    """``depth`` hidden layers of ``width`` units with ReLU.

    ReLU, not a smooth activation: piecewise-linear WGAN-GP critics land on the linear-critic equilibrium of
    ``otsr.theory`` (measured: shift 1.15 vs s_GP 1.143 at lambda = 8; SiLU critics settled near 1.23).
    """

    def __init__(self, dim: int, out: int, width: int = 128, depth: int = 3, zero_head: bool = False):
        super().__init__()
        layers, d = [], dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, out)
        if zero_head:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x):
        """Vectors (n, dim) -> (n, out)."""
        return self.head(self.body(x))


class _PreNormBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, h):
        return h + self.ff(self.norm(h))


class ResMLP(nn.Module):
    """Residual MLP: a linear stem, ``blocks`` pre-LayerNorm GELU blocks (width -> 2 width -> width), a head.

    Fits the sharp piecewise maps of ``convex-mixture`` far better than a plain MLP of the same cost (regressing
    T* at D = 64, 2000 Adam steps: 4.5 % vs 14 % L2-UVP at width 128). The head starts at zero.
    """

    def __init__(self, dim: int, out: int, width: int = 128, blocks: int = 3):
        super().__init__()
        self.stem = nn.Linear(dim, width)
        self.blocks = nn.Sequential(*[_PreNormBlock(width) for _ in range(blocks)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, out)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        """Vectors (n, dim) -> (n, out)."""
        return self.head(self.norm(self.blocks(self.stem(x))))


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(min(8, cout), cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(min(8, cout), cout), nn.SiLU())


class UNet(nn.Module):
    """A small UNet (``levels`` downsamplings, widths base * 2^i): identity base plus a learned residual."""

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

    def base(self, x):
        """The identity."""
        return x

    def residual(self, x):
        """Images (n, C, H, W) with H, W divisible by 2^levels -> a correction of the same shape."""
        h, skips = self.stem(x), []
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.mid(h)
        for i in reversed(range(self.levels)):
            h = self.dec[i](torch.cat([self.up[i](h), skips[i]], 1))
        return self.out(h)

    def forward(self, x):
        """T(x) = x + residual(x)."""
        return self.base(x) + self.residual(x)


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

    def __init__(self, channels: int = 3, size: int = 64, base: int = 32, max_width: int = 256,
                 zero_head: bool = False):
        super().__init__()
        layers, c, s = [nn.Conv2d(channels, base, 3, padding=1)], base, size
        while s > 4:
            nxt = min(max_width, c * 2)
            layers += [_ResBlock(c, nxt), nn.AvgPool2d(2)]
            c, s = nxt, s // 2
        layers += [_ResBlock(c, c), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c * s * s, 1)
        if zero_head:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def forward(self, x):
        """Images (n, C, size, size) -> scores (n, 1)."""
        return self.head(self.body(x).flatten(1))


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

    Its base is the bicubic upsampling of the input and its learned residual starts at zero, so training starts
    at bicubic.
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

    def base(self, x):
        """Bicubic upsampling by ``scale``."""
        return nn.functional.interpolate(x.float(), scale_factor=self.scale, mode="bicubic", align_corners=False)

    def residual(self, x):
        """LR images (n, C, h, w) -> a correction of shape (n, C, scale h, scale w)."""
        h = self.head(x)
        return self.tail(self.up(h + self.body(h)))

    def forward(self, x):
        """T(x) = bicubic(x) + residual(x)."""
        return self.base(x) + self.residual(x)


def _precision(dtype: torch.dtype | None, device: torch.device):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


class TransportMap(nn.Module):
    """T(x) = base(x) + residual(x) with the residual network run under ``dtype`` and returned in fp32.

    Vectors: base = Bures map m_q + A (x - m_p) (A = I, m = 0 without a warm start) and residual
    s_q * net((x - m_p) / s_p). Images: the network's own base (identity, bicubic) and residual.
    """

    def __init__(self, net: nn.Module, dim: int | None = None, fit: GaussianFit | None = None):
        super().__init__()
        self.net = net
        self.dtype: torch.dtype | None = None  # set by the trainer from the resolved precision
        self.vector = dim is not None
        if self.vector:
            fit = fit or GaussianFit.identity(dim)
            self.register_buffer("lin", fit.bures_matrix().float())
            self.register_buffer("m_p", fit.mean_p.float())
            self.register_buffer("m_q", fit.mean_q.float())
            self.register_buffer("s_p", torch.tensor(fit.scale_p, dtype=torch.float32))
            self.register_buffer("s_q", torch.tensor(fit.scale_q, dtype=torch.float32))

    def forward(self, x):
        """A batch of P samples -> their images (fp32)."""
        if self.vector:
            z = (x - self.m_p) / self.s_p
            with _precision(self.dtype, x.device):
                r = self.net(z)
            return self.m_q + (x - self.m_p) @ self.lin + self.s_q * r.float()
        with _precision(self.dtype, x.device):
            r = self.net.residual(x)
        return self.net.base(x).float() + r.float()


class Potential(nn.Module):
    """f(y) = f0(y) + scale * net((y - m_q) / s_q), returned in fp32 as shape (n,).

    ``f0`` is the quadratic potential under which the Bures map is optimal for the cost kappa |x - y|^2:
    f0(y) = kappa (|y|^2 - (y - m_q)^T A^-1 (y - m_q) - 2 m_p . y) (zero without a warm start), so the pair
    (Bures map, f0) is the OTS saddle point of the Gaussian fits. GAN critics use scale 1 and no f0.
    """

    def __init__(self, net: nn.Module, shape: tuple[int, ...], scale: float = 1.0, fit: GaussianFit | None = None,
                 kappa: float = 0.0, quadratic: bool = False, image_stats: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        self.net = net
        self.dtype: torch.dtype | None = None
        self.vector = len(shape) == 1
        self.quadratic = quadratic and self.vector
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("kappa", torch.tensor(float(kappa)))
        if self.vector:
            fit = fit or GaussianFit.identity(shape[0])
            self.register_buffer("m_p", fit.mean_p.float())
            self.register_buffer("m_q", fit.mean_q.float())
            self.register_buffer("s_q", torch.tensor(fit.scale_q, dtype=torch.float32))
            self.register_buffer("inv_lin", torch.linalg.inv(fit.bures_matrix()).float())
        else:  # images: one mean and scale over all pixels of Q
            self.register_buffer("m_q", torch.tensor(float(image_stats[0])))
            self.register_buffer("s_q", torch.tensor(float(image_stats[1])))

    def f0(self, y):
        """The quadratic warm-start potential (fp32)."""
        z = y - self.m_q
        return self.kappa * ((y * y).sum(1) - ((z @ self.inv_lin) * z).sum(1) - 2 * y @ self.m_p)

    def forward(self, y):
        """A batch of Q-shaped samples -> potential values (n,) in fp32."""
        inp = (y - self.m_q) / self.s_q
        with _precision(self.dtype, y.device):
            h = self.net(inp)
        out = self.scale * h.float().reshape(y.shape[0])
        return out + self.f0(y.float()) if self.quadratic else out


MAPS, CRITICS = MAP_MODELS, CRITIC_MODELS
CONV_MODELS = ("unet", "edsr", "resnet")


def default_models(shape: tuple[int, ...], shape_q: tuple[int, ...] | None = None) -> tuple[str, str]:
    """(map, critic) names: ResMLP + MLP for vectors, UNet + ResNet for images, EDSR + ResNet for SR."""
    if len(shape) == 1:
        return "resmlp", "mlp"
    return ("edsr" if shape_q is not None and tuple(shape_q) != tuple(shape) else "unet"), "resnet"


def default_width(name: str, shape: tuple[int, ...]) -> int:
    """Width used when the config says 0: ResMLP maps 64 / 128 / 256 units for D <= 8 / 64 / above, MLP critics
    128 (a wider OTS potential learned slower: at D = 128, 34 % vs 46 % L2-UVP after 250 steps at 128 vs 256),
    base channels 32 (UNet, ResNet), features 64 (EDSR)."""
    d = math.prod(shape)
    if name == "resmlp":
        return 64 if d <= 8 else 128 if d <= 64 else 256
    return {"mlp": 128, "edsr": 64}.get(name, 32)


def build_map(name: str, shape: tuple[int, ...], width: int, depth: int, shape_q: tuple[int, ...] | None = None,
              fit: GaussianFit | None = None) -> TransportMap:
    """The map T from samples of ``shape`` to samples of ``shape_q`` (default: the same shape)."""
    shape, shape_q = tuple(shape), tuple(shape_q or shape)
    if name == "edsr":
        if len(shape) != 3 or shape_q[1] % shape[1] or shape_q[1] // shape[1] < 2:
            raise ValueError(f"model 'edsr' maps small images to larger ones, not {shape} -> {shape_q}")
        return TransportMap(EDSR(shape[0], features=width, blocks=depth, scale=shape_q[1] // shape[1]))
    if shape_q != shape:
        raise ValueError(f"model {name!r} keeps the sample shape; {shape} -> {shape_q} needs 'edsr'")
    if name in ("mlp", "resmlp"):
        if len(shape) != 1:
            _bad_shape(name, shape)
        d = shape[0]
        net = ResMLP(d, d, width, depth) if name == "resmlp" else MLP(d, d, width, depth, zero_head=True)
        return TransportMap(net, dim=d, fit=fit)
    if name == "unet":
        return TransportMap(UNet(shape[0], base=width, levels=depth)) if len(shape) == 3 else _bad_shape(name, shape)
    raise ValueError(f"unknown map model {name!r}; valid: {', '.join(MAPS)}")


def build_critic(name: str, shape: tuple[int, ...], width: int, depth: int, *, method: str, cost: str,
                 fit: GaussianFit | None = None, image_stats: tuple[float, float] | None = None) -> Potential:
    """The critic (GAN) or potential (OTS) for samples of ``shape``, reading inputs normalised by Q's mean and
    scale (``fit`` for vectors, ``image_stats`` = (mean, std) over pixels for images).

    OTS potentials start at zero (plus the warm-start quadratic for vectors) and are scaled by 2 kappa s_q^2,
    s_q^2 = Var(Q) / d; GAN critics keep their default initialisation and unit scale.
    """
    stats = image_stats or (0.0, 1.0)
    shape = tuple(shape)
    ots = method == "ots"
    if name == "mlp":
        if len(shape) != 1:
            _bad_shape(name, shape)
        net = MLP(shape[0], 1, width, depth, zero_head=ots)
    elif name == "resnet":
        if len(shape) != 3:
            _bad_shape(name, shape)
        net = ResNetCritic(shape[0], shape[1], base=width, zero_head=ots)
    else:
        raise ValueError(f"unknown critic model {name!r}; valid: {', '.join(CRITICS)}")
    if not ots:
        return Potential(net, shape, fit=fit, image_stats=stats)
    k = cost_kappa(cost, math.prod(shape))
    s_q2 = fit.scale_q**2 if fit is not None else stats[1] ** 2
    return Potential(net, shape, scale=2 * k * s_q2, fit=fit, kappa=k, quadratic=fit is not None and fit.warm,
                     image_stats=stats)


def _bad_shape(name: str, shape: tuple[int, ...]):
    raise ValueError(f"model {name!r} does not take samples of shape {shape}")
