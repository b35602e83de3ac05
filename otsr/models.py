"""Networks for maps T and critics/potentials f, built for bundles: K independent members in one module.

Every layer here holds K members' weights stacked along its first dimension and runs them in one call
(``torch.baddbmm`` for dense layers, grouped convolutions for images), so a bundle of K configurations costs one
set of kernel launches instead of K. A solo run is a bundle of one: there is no second set of networks.
Layouts: vectors are ``(K, B, d)``; image networks work on ``(B, K*C, H, W)`` (member k's channels are the
k-th block), and the wrappers take and return ``(K, B, C, H, W)``.

Networks: a residual MLP with LayerNorm (vector maps), a ReLU MLP (vector critics and potentials), a UNet
(image maps), a ResNet critic (images), a convex image potential (opt-in) and EDSR (super-resolution maps).
Image maps split into a fixed ``base`` (identity, bicubic) and a learned ``residual`` whose last layer starts at zero.

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

Members are built one at a time, each seeded by its own config (so member k starts exactly where a solo run with
its seed starts), and joined by ``stack_members``; ``member_state`` cuts one member's weights back out in the
solo layout, which is what checkpoints store.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from otsr.config import CRITIC_MODELS as CRITICS
from otsr.config import MAP_MODELS as MAPS
from otsr.costs import kappa as cost_kappa
from otsr.warm_start import GaussianFit

CONV_MODELS = ("unet", "edsr", "resnet", "icnn")
HIGHPASS_GAIN = 4.0  # the high-pass band of a normalised image is ~4x smaller than the image
# The measured floor for ``contrast_highpass`` (``potential_contrast``; Q-normalised units; the demo's HR crops
# have a median next-octave RMS of 0.02, bicubic outputs 0.01). 0.05 separated worse (AUC 0.88 against 0.925).
CONTRAST_EPS = 0.01


# --- batched layers: K members, stacked along the first dimension of every parameter ---

class Linear(nn.Module):
    """K dense layers: (K, B, fan_in) -> (K, B, fan_out); initialised like ``nn.Linear``."""

    def __init__(self, k: int, fan_in: int, fan_out: int, zero: bool = False):
        super().__init__()
        bound = 1 / math.sqrt(fan_in)
        self.weight = nn.Parameter(torch.empty(k, fan_in, fan_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(k, 1, fan_out).uniform_(-bound, bound))
        if zero:
            nn.init.zeros_(self.weight)
            nn.init.zeros_(self.bias)

    def forward(self, x):
        """x: (K, B, fan_in)."""
        return torch.baddbmm(self.bias, x, self.weight)


class LayerNorm(nn.Module):
    """LayerNorm over the last dimension with a per-member scale and shift."""

    def __init__(self, k: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(k, 1, width))
        self.bias = nn.Parameter(torch.zeros(k, 1, width))

    def forward(self, x):
        """x: (K, B, width)."""
        return F.layer_norm(x, x.shape[-1:]) * self.weight + self.bias


def conv(k: int, cin: int, cout: int, size: int = 3, zero: bool = False) -> nn.Conv2d:
    """K convolutions as one grouped convolution on (B, K*cin, H, W); same init as K separate ``nn.Conv2d``."""
    c = nn.Conv2d(k * cin, k * cout, size, padding=size // 2, groups=k)
    if zero:
        nn.init.zeros_(c.weight)
        nn.init.zeros_(c.bias)
    return c


def group_norm(k: int, channels: int) -> nn.GroupNorm:
    """Per-member GroupNorm with min(8, channels) groups: the groups never straddle two members."""
    return nn.GroupNorm(k * min(8, channels), k * channels)


def cat_members(k: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Concatenate channels member by member: (B, K*ca, H, W), (B, K*cb, H, W) -> (B, K*(ca+cb), H, W)."""
    n, _, h, w = a.shape
    return torch.cat([a.reshape(n, k, -1, h, w), b.reshape(n, k, -1, h, w)], 2).reshape(n, -1, h, w)


def to_channels(x: torch.Tensor) -> torch.Tensor:
    """(K, B, C, H, W) -> (B, K*C, H, W)."""
    k, n, c, h, w = x.shape
    return x.transpose(0, 1).reshape(n, k * c, h, w)


def from_channels(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, K*C, H, W) -> (K, B, C, H, W)."""
    n, kc, h, w = x.shape
    return x.reshape(n, k, kc // k, h, w).transpose(0, 1)


# --- networks ---

class MLP(nn.Module):
    """``depth`` hidden layers of ``width`` units with ReLU, per member.

    ReLU, not a smooth activation: piecewise-linear WGAN-GP critics land on the linear-critic equilibrium of
    ``otsr.theory`` (measured: shift 1.15 vs s_GP 1.143 at lambda = 8; SiLU critics settled near 1.23), and
    ReLU OTS potentials learned faster than SiLU ones (icnn-mixture D = 16: 3.0 % vs 5.7 % L2-UVP at step 1000).
    """

    def __init__(self, k: int, dim: int, out: int, width: int = 128, depth: int = 3, zero_head: bool = False):
        super().__init__()
        layers, d = [], dim
        for _ in range(depth):
            layers += [Linear(k, d, width), nn.ReLU()]
            d = width
        self.body = nn.Sequential(*layers)
        self.head = Linear(k, d, out, zero=zero_head)

    def forward(self, x):
        """Vectors (K, B, dim) -> (K, B, out)."""
        return self.head(self.body(x))


class _PreNormBlock(nn.Module):
    def __init__(self, k: int, width: int):
        super().__init__()
        self.norm = LayerNorm(k, width)
        self.ff = nn.Sequential(Linear(k, width, 2 * width), nn.GELU(), Linear(k, 2 * width, width))

    def forward(self, h):
        return h + self.ff(self.norm(h))


class ResMLP(nn.Module):
    """Residual MLP: a linear stem, ``blocks`` pre-LayerNorm GELU blocks (width -> 2 width -> width), a head.

    Fits the sharp piecewise maps of ``convex-mixture`` far better than a plain MLP of the same cost (regressing
    T* at D = 64, 2000 Adam steps: 4.5 % vs 14 % L2-UVP at width 128). The head starts at zero.
    """

    def __init__(self, k: int, dim: int, out: int, width: int = 128, blocks: int = 3):
        super().__init__()
        self.stem = Linear(k, dim, width)
        self.blocks = nn.Sequential(*[_PreNormBlock(k, width) for _ in range(blocks)])
        self.norm = LayerNorm(k, width)
        self.head = Linear(k, width, out, zero=True)

    def forward(self, x):
        """Vectors (K, B, dim) -> (K, B, out)."""
        return self.head(self.norm(self.blocks(self.stem(x))))


class _ConvBlock(nn.Module):
    def __init__(self, k: int, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(conv(k, cin, cout), group_norm(k, cout), nn.SiLU(),
                                  conv(k, cout, cout), group_norm(k, cout), nn.SiLU())

    def forward(self, x):
        return self.body(x)


class UNet(nn.Module):
    """A small UNet (``levels`` downsamplings, widths base * 2^i): identity base plus a learned residual."""

    def __init__(self, k: int, channels: int = 3, base: int = 32, levels: int = 3):
        super().__init__()
        widths = [base * 2**i for i in range(levels + 1)]
        self.k, self.levels = k, levels
        self.stem = conv(k, channels, base)
        self.down = nn.ModuleList(_ConvBlock(k, widths[max(i - 1, 0)], widths[i]) for i in range(levels))
        self.pool = nn.AvgPool2d(2)
        self.mid = _ConvBlock(k, widths[levels - 1], widths[levels])
        self.up = nn.ModuleList(nn.ConvTranspose2d(k * widths[i + 1], k * widths[i], 2, stride=2, groups=k)
                                for i in range(levels))
        self.dec = nn.ModuleList(_ConvBlock(k, 2 * widths[i], widths[i]) for i in range(levels))
        self.out = conv(k, base, channels, size=1, zero=True)

    def base(self, x):
        """The identity."""
        return x

    def residual(self, x):
        """Images (B, K*C, H, W) with H, W divisible by 2^levels -> a correction of the same shape."""
        h, skips = self.stem(x), []
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.mid(h)
        for i in reversed(range(self.levels)):
            h = self.dec[i](cat_members(self.k, self.up[i](h), skips[i]))
        return self.out(h)


class _ResBlock(nn.Module):
    def __init__(self, k: int, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(nn.LeakyReLU(0.2), conv(k, cin, cout), nn.LeakyReLU(0.2), conv(k, cout, cout))
        self.skip = conv(k, cin, cout, size=1) if cin != cout else nn.Identity()

    def forward(self, x):
        return self.skip(x) + 0.1 * self.body(x)


def highpass(x: torch.Tensor) -> torch.Tensor:
    """x minus its 3x3 box blur, per channel (replicate padding): the band where SR outputs and HR images differ."""
    return x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


def contrast_highpass(x: torch.Tensor, k: int, eps: float, band: torch.Tensor | None = None) -> torch.Tensor:
    """Each member's high-pass band divided by the RMS of its band one octave lower (per sample), (B, K*C, H, W).

    The ratio of the finest band's energy to the next one's is what tells an HR crop from an upsampled one
    whatever the crop's content (a flat crop is quiet in both bands, a textured one loud in both); a ReLU network
    reading the raw bands must learn that division, which 600 updates do not teach it. ``eps`` (in Q-normalised
    units) keeps flat crops from being amplified without bound. ``band``: ``highpass(x)`` when the caller has it.
    """
    n, _, h, w = x.shape
    band = highpass(x) if band is None else band
    mid = highpass(F.avg_pool2d(x, 2)).reshape(n, k, -1)
    gain = (mid.pow(2).mean(-1) + eps * eps).rsqrt()
    return (band.reshape(n, k, -1, h, w) * gain[..., None, None, None]).reshape(n, -1, h, w)


class ResNetCritic(nn.Module):
    """ResNet critic (WGAN-QC style): residual blocks with average pooling down to 4x4, then linear.

    No normalisation layers, so the gradient penalty acts per sample. With ``highpass`` the first convolution
    also reads the input's high-pass band (x - blur(x), times ``HIGHPASS_GAIN``): a linear function of the input,
    so the function class is unchanged, but the fine detail that average pooling would wash out reaches the
    residual blocks at a usable scale (on the SR demo pair a frozen-map potential separated HR from bicubic at
    AUC 0.80 after 500 updates with it and Adam's eps in the potential's units, 0.52 with neither). With
    ``contrast`` > 0 it also reads that band divided by the crop's next-octave RMS (``contrast_highpass``): not
    linear, so the class grows, which a potential's unconstrained class allows; the same check then reads 0.93
    after 60 updates and 0.925 after 600.
    """

    def __init__(self, k: int, channels: int = 3, size: int = 64, base: int = 32, max_width: int = 256,
                 zero_head: bool = False, highpass: bool = False, contrast: float = 0.0):
        super().__init__()
        self.highpass, self.contrast = highpass, contrast
        bands = 1 + int(highpass) + int(contrast > 0)
        layers, c, s = [conv(k, channels * bands, base)], base, size
        while s > 4:
            nxt = min(max_width, c * 2)
            layers += [_ResBlock(k, c, nxt), nn.AvgPool2d(2)]
            c, s = nxt, s // 2
        layers += [_ResBlock(k, c, c), nn.LeakyReLU(0.2)]
        self.k = k
        self.body = nn.Sequential(*layers)
        self.head = Linear(k, c * s * s, 1, zero=zero_head)

    def forward(self, x):
        """Images (B, K*C, size, size) -> scores (K, B, 1)."""
        inp, band = x, highpass(x) if self.highpass or self.contrast > 0 else None
        if self.highpass:
            inp = cat_members(self.k, inp, HIGHPASS_GAIN * band)
        if self.contrast > 0:
            inp = cat_members(self.k, inp, contrast_highpass(x, self.k, self.contrast, band))
        h = self.body(inp)
        n = h.shape[0]
        return self.head(h.reshape(n, self.k, -1).transpose(0, 1))


class ConvexPotential(nn.Module):
    """An OTS image potential whose map problem is convex: net(u) = (1 - a)/2 |u|^2 - g(u), g input-convex.

    For the cost kappa |x - y|^2 and f(y) = 2 kappa s_q^2 net(u), u = (y - m_q) / s_q, the map's objective
    kappa |x - y|^2 - f(y) is, up to terms linear in y, 2 kappa s_q^2 (a/2 |u|^2 + g(u)): strictly convex in y for
    a > 0, so each x has one best response (the gradient of its conjugate) and no spurious local minimum (with the
    unconstrained ResNet the map found minima of f's errors off Q's support on ``convex-images``; the unique best
    response can still lie off it, README "Images"). At a potential gain gamma <= 1 the quadratic's coefficient is
    1 - gamma (1 - a) > 0, so convexity holds; it needs the pixel cost (no perceptual term) and no warm-start
    quadratic. g is a convolutional ICNN: softplus units, non-negative weights on the previous layer (kept so by
    ``project``, called after each update), unconstrained weights on the input and its high-pass band at each scale,
    average pooling (non-negative and linear). It starts at zero with a = 1: f = 0, whose best response is the
    identity.
    """

    def __init__(self, k: int, channels: int = 3, size: int = 16, base: int = 16):
        super().__init__()
        self.k = k
        self.inp = nn.ModuleList([conv(k, 2 * channels, base)])
        self.hidden = nn.ModuleList()
        s = size
        while s > 4:
            s //= 2
            self.inp.append(conv(k, 2 * channels, base))
            self.hidden.append(conv(k, base, base))
        for layer in self.hidden:  # non-negative, mean weight 1 / fan_in: a unit averages the previous layer
            fan_in = layer.weight[0].numel()
            nn.init.uniform_(layer.weight, 0.0, 2.0 / fan_in)
            nn.init.zeros_(layer.bias)
        self.out = nn.Parameter(torch.zeros(k, base))  # non-negative weights of the last layer's channel means
        self.linear = conv(k, channels, 1, size=1, zero=True)  # an affine part of g, any sign
        self.a_raw = nn.Parameter(torch.full((k,), math.log(math.e - 1)))  # a = softplus(a_raw) = 1 at the start

    @torch.no_grad()
    def project(self) -> None:
        """Back onto the convex class: weights on the previous layer and the output's non-negative."""
        for layer in self.hidden:
            layer.weight.clamp_(min=0)
        self.out.clamp_(min=0)

    def forward(self, u):
        """Normalised images (B, K*C, size, size) -> net(u) (K, B, 1)."""
        n = u.shape[0]
        x = cat_members(self.k, u, HIGHPASS_GAIN * highpass(u))
        z = F.softplus(self.inp[0](x))
        for layer, inp in zip(self.hidden, self.inp[1:]):
            x = F.avg_pool2d(x, 2)
            z = F.softplus(layer(F.avg_pool2d(z, 2)) + inp(x))
        g = (z.reshape(n, self.k, -1, z.shape[-2] * z.shape[-1]).mean(-1) * self.out).sum(-1)
        g = g + self.linear(u).reshape(n, self.k, -1).sum(-1)
        sq = u.reshape(n, self.k, -1).pow(2).sum(-1)
        net = 0.5 * (1 - F.softplus(self.a_raw)) * sq - g
        return net.transpose(0, 1)[..., None]


class _EDSRBlock(nn.Module):
    def __init__(self, k: int, features: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(conv(k, features, features), nn.ReLU(inplace=True), conv(k, features, features))
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.res_scale * self.body(x)


class EDSR(nn.Module):
    """EDSR super-resolution map: residual blocks without normalisation, pixel-shuffle upsampling by ``scale``.

    Its base is the bicubic upsampling of the input and its learned residual starts at zero, so training starts
    at bicubic. Pixel shuffle keeps members apart: each output channel reads a block of 4 input channels, and a
    member's blocks are its own.
    """

    def __init__(self, k: int, channels: int = 3, features: int = 64, blocks: int = 16, scale: int = 4,
                 res_scale: float = 0.1):
        super().__init__()
        if scale & (scale - 1) or scale < 2:
            raise ValueError(f"EDSR scale={scale} must be a power of 2 >= 2")
        self.scale = scale
        self.head = conv(k, channels, features)
        self.body = nn.Sequential(*[_EDSRBlock(k, features, res_scale) for _ in range(blocks)],
                                  conv(k, features, features))
        up = []
        for _ in range(scale.bit_length() - 1):
            up += [conv(k, features, 4 * features), nn.PixelShuffle(2)]
        self.up = nn.Sequential(*up)
        self.tail = conv(k, features, channels, zero=True)

    def base(self, x):
        """Bicubic upsampling by ``scale``."""
        return F.interpolate(x.float(), scale_factor=self.scale, mode="bicubic", align_corners=False)

    def residual(self, x):
        """LR images (B, K*C, h, w) -> a correction of shape (B, K*C, scale h, scale w)."""
        h = self.head(x)
        return self.tail(self.up(h + self.body(h)))


# --- wrappers in the data's units ---

def _precision(dtype: torch.dtype | None, device: torch.device):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


class TransportMap(nn.Module):
    """T(x) = base(x) + residual(x) for K members: (K, B, ...) -> (K, B, ...shape_q), fp32 out.

    Vectors: base = Bures map m_q + A (x - m_p) (A = I, m = 0 without a warm start) and residual
    s_q * net((x - m_p) / s_p). Images: the network's own base (identity, bicubic) and residual, on the
    channel-stacked layout. The fit's buffers are shared by all members (they depend on the pair only).
    """

    def __init__(self, net: nn.Module, k: int, dim: int | None = None, fit: GaussianFit | None = None):
        super().__init__()
        self.net, self.k = net, k
        self.dtype: torch.dtype | None = None  # set by the trainer from the resolved precision
        self.vector = dim is not None
        self.warm_image = not self.vector and fit is not None  # an image map whose base is the flat Bures map
        if self.warm_image:
            self.register_buffer("w_lin", fit.bures_matrix().float())
            self.register_buffer("w_m_p", fit.mean_p.float())
            self.register_buffer("w_m_q", fit.mean_q.float())
        if self.vector:
            fit = fit or GaussianFit.identity(dim)
            self.register_buffer("lin", fit.bures_matrix().float())
            self.register_buffer("m_p", fit.mean_p.float())
            self.register_buffer("m_q", fit.mean_q.float())
            self.register_buffer("s_p", torch.tensor(fit.scale_p, dtype=torch.float32))
            self.register_buffer("s_q", torch.tensor(fit.scale_q, dtype=torch.float32))

    def forward(self, x):
        """A batch of P samples per member (K, B, ...) -> their images (fp32)."""
        if self.vector:
            z = (x - self.m_p) / self.s_p
            with _precision(self.dtype, x.device):
                r = self.net(z)
            return self.m_q + (x - self.m_p) @ self.lin + self.s_q * r.float()
        h = to_channels(x)
        with _precision(self.dtype, x.device):
            r = self.net.residual(h)
        if self.warm_image:
            flat = x.float().flatten(2)
            base = (self.w_m_q + (flat - self.w_m_p) @ self.w_lin).reshape(x.shape)
            return base + from_channels(r.float(), self.k)
        return from_channels(self.net.base(h).float() + r.float(), self.k)


class Potential(nn.Module):
    """f(y) = f0(y) + scale * net((y - m_q) / s_q) for K members: (K, B, ...) -> (K, B) in fp32.

    ``f0`` is the quadratic potential under which the Bures map is optimal for the cost kappa |x - y|^2:
    f0(y) = kappa (|y|^2 - (y - m_q)^T A^-1 (y - m_q) - 2 m_p . y) (zero without a warm start), so the pair
    (Bures map, f0) is the OTS saddle point of the Gaussian fits. GAN critics use scale 1 and no f0.
    """

    def __init__(self, net: nn.Module, k: int, shape: tuple[int, ...], scale: float = 1.0,
                 fit: GaussianFit | None = None, kappa: float = 0.0, quadratic: bool = False,
                 image_stats: tuple[float, float] = (0.0, 1.0)):
        super().__init__()
        self.net, self.k = net, k
        self.dtype: torch.dtype | None = None
        self.vector = len(shape) == 1
        self.quadratic = quadratic
        if quadratic and not self.vector:  # images warm-started at the flat Bures map: f0 on flattened samples
            self.register_buffer("w_m_p", fit.mean_p.float())
            self.register_buffer("w_m_q", fit.mean_q.float())
            self.register_buffer("w_inv_lin", torch.linalg.inv(fit.bures_matrix()).float())
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
        """The quadratic warm-start potential (fp32), y: (K, B, d) (images: (K, B, ...), flattened here)."""
        if self.vector:
            m_p, m_q, inv_lin = self.m_p, self.m_q, self.inv_lin
        else:
            y, m_p, m_q, inv_lin = y.flatten(2), self.w_m_p, self.w_m_q, self.w_inv_lin
        z = y - m_q
        return self.kappa * ((y * y).sum(-1) - ((z @ inv_lin) * z).sum(-1) - 2 * y @ m_p)

    def forward(self, y):
        """Q-shaped samples per member (K, B, ...) -> potential values (K, B) in fp32."""
        inp = (y - self.m_q) / self.s_q
        if not self.vector:
            inp = to_channels(inp)
        with _precision(self.dtype, y.device):
            h = self.net(inp)
        out = self.scale * h.float().reshape(y.shape[0], y.shape[1])
        return out + self.f0(y.float()) if self.quadratic else out


class MemberView(nn.Module):
    """Member ``index`` of a bundled map as an ordinary function of a batch: (B, ...) -> (B, ...).

    For figures, upscaling and user code. With K > 1 it runs every member on the batch; a Result's map is a
    one-member network, so there it costs nothing extra.
    """

    def __init__(self, net: nn.Module, index: int = 0):
        super().__init__()
        self.net, self.index = net, index

    def forward(self, x):
        """x: (B, ...) -> the member's images (B, ...)."""
        return self.net(x[None].expand(self.net.k, *x.shape))[self.index]


# --- members: join and cut ---

def stack_members(nets: list[nn.Module], bundle: nn.Module) -> nn.Module:
    """Load K one-member networks into ``bundle`` (the same network built for K members); returns it.

    Every parameter of a K-member network is the members' parameters concatenated along dimension 0; buffers
    are shared and must agree.
    """
    states = [n.state_dict() for n in nets]
    params = {name for name, _ in bundle.named_parameters()}
    merged = {}
    for key in states[0]:
        if key in params:
            merged[key] = torch.cat([s[key] for s in states])
        else:
            merged[key] = states[0][key]
    bundle.load_state_dict(merged)
    return bundle


def member_state(bundle: nn.Module, index: int) -> dict[str, torch.Tensor]:
    """Member ``index``'s weights in the one-member layout (what a solo checkpoint holds)."""
    params = {name for name, _ in bundle.named_parameters()}
    out = {}
    for key, value in bundle.state_dict().items():
        if key in params:
            n = value.shape[0] // bundle.k
            out[key] = value[index * n:(index + 1) * n].detach().clone()
        else:
            out[key] = value.detach().clone()
    return out


# --- construction ---

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
              fit: GaussianFit | None = None, k: int = 1) -> TransportMap:
    """The map T from samples of ``shape`` to samples of ``shape_q`` (default: the same shape), K members."""
    shape, shape_q = tuple(shape), tuple(shape_q or shape)
    if name == "edsr":
        if len(shape) != 3 or shape_q[1] % shape[1] or shape_q[1] // shape[1] < 2:
            raise ValueError(f"model 'edsr' maps small images to larger ones, not {shape} -> {shape_q}")
        return TransportMap(EDSR(k, shape[0], features=width, blocks=depth, scale=shape_q[1] // shape[1]), k)
    if shape_q != shape:
        raise ValueError(f"model {name!r} keeps the sample shape; {shape} -> {shape_q} needs 'edsr'")
    if name in ("mlp", "resmlp"):
        if len(shape) != 1:
            _bad_shape(name, shape)
        d = shape[0]
        net = ResMLP(k, d, d, width, depth) if name == "resmlp" else MLP(k, d, d, width, depth, zero_head=True)
        return TransportMap(net, k, dim=d, fit=fit)
    if name == "unet":
        if len(shape) != 3:
            _bad_shape(name, shape)
        return TransportMap(UNet(k, shape[0], base=width, levels=depth), k, fit=fit)
    raise ValueError(f"unknown map model {name!r}; valid: {', '.join(MAPS)}")


def build_critic(name: str, shape: tuple[int, ...], width: int, depth: int, *, potential: bool, cost: str,
                 fit: GaussianFit | None = None, image_stats: tuple[float, float] | None = None,
                 k: int = 1, gain: float = 1.0, highpass: bool = True, contrast: float = 0.0) -> Potential:
    """The critic (GAN) or potential (OTS, ``potential=True``) for samples of ``shape``, K members, reading inputs
    normalised by Q's mean and scale (``fit`` for vectors, ``image_stats`` = (mean, std) over pixels for images).

    Potentials start at zero (plus the warm-start quadratic for vectors) and are scaled by 2 kappa s_q^2 * gain,
    s_q^2 = Var(Q) / d; GAN critics keep their default initialisation and unit scale. ResNet critics read the
    high-pass band too (``highpass``); with ``contrast`` > 0 a ResNet potential also reads it contrast-normalised
    (``contrast_highpass``, floor ``contrast``). GAN critics never do: under the gradient penalty that band's steep
    gradient on flat crops cost separation (AUC 0.47 against 0.59 after 600 updates on the SR demo pair).
    """
    stats = image_stats or (0.0, 1.0)
    shape = tuple(shape)
    if contrast and name != "resnet":
        raise ValueError(f"config key 'potential_contrast'={contrast!r}: the contrast band is read by ResNet "
                         f"potentials (image pairs) only, not by a {name!r} potential; leave it at 0")
    if name == "mlp":
        if len(shape) != 1:
            _bad_shape(name, shape)
        net = MLP(k, shape[0], 1, width, depth, zero_head=potential)
    elif name == "icnn":
        why = ("it is an OTS potential, not a GAN critic" if not potential else
               f"it takes images, not samples of shape {shape}" if len(shape) != 3 else
               f"its convexity needs potential_gain <= 1, not {gain}" if gain > 1.0 else
               "a warm-start quadratic (warm_start 'bures') would break its convexity" if fit is not None and fit.warm
               else "")
        if why:
            raise ValueError(f"config key 'critic_model'='icnn' (a convex potential): {why}")
        net = ConvexPotential(k, shape[0], shape[1], base=width)
    elif name == "resnet":
        if len(shape) != 3:
            _bad_shape(name, shape)
        net = ResNetCritic(k, shape[0], shape[1], base=width, zero_head=potential, highpass=highpass,
                           contrast=contrast if potential else 0.0)
    else:
        raise ValueError(f"unknown critic model {name!r}; valid: {', '.join(CRITICS)}")
    if not potential:
        return Potential(net, k, shape, fit=fit, image_stats=stats)
    kap = cost_kappa(cost, math.prod(shape))
    s_q2 = fit.scale_q**2 if fit is not None else stats[1] ** 2
    return Potential(net, k, shape, scale=2 * kap * s_q2 * gain, fit=fit, kappa=kap,
                     quadratic=fit is not None and fit.warm, image_stats=stats)


def _bad_shape(name: str, shape: tuple[int, ...]):
    raise ValueError(f"model {name!r} does not take samples of shape {shape}")
