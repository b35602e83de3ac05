"""Map-quality and bias metrics (definitions of the paper and of the Wasserstein-2 benchmark).

One implementation per metric: the streaming accumulators below (``Displacements``, ``Moments``, projections for
sliced W2) are what evaluation runs chunk by chunk, and the batch functions (``l2_uvp``, ``cosine``,
``mean_shift``, ``sliced_wasserstein``, ``frechet``) feed them one batch, so tests of the functions test the code
users run. All functions take batches ``(n, ...)`` and flatten each sample. Randomness is an explicit ``seed``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch

from otsr.costs import pairwise_cost


def _check_same(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim < 2 or a.shape[0] < 1:
        raise ValueError(f"{what}: expected a batch (n, ...), got shape {tuple(a.shape)}")


class Displacements:
    """Running sums behind L2-UVP and cos: |T^(x) - T*(x)|^2 and the products of the displacements T^(x) - x,
    T*(x) - x, in float64, fed chunk by chunk."""

    def __init__(self):
        self.n, self.l2, self.uv, self.uu, self.vv = 0, 0.0, 0.0, 0.0, 0.0

    def update(self, x: torch.Tensor, t_hat: torch.Tensor, t_star: torch.Tensor) -> None:
        """Add a chunk: samples x and both maps' images of them (same shapes, or SR-shaped x for L2-UVP only)."""
        a, b = t_hat.flatten(1).double(), t_star.flatten(1).double()
        self.n += a.shape[0]
        self.l2 += float((a - b).pow(2).sum())
        if x.shape == t_hat.shape:
            x0 = x.flatten(1).double()
            u, v = a - x0, b - x0
            self.uv += float((u * v).sum())
            self.uu += float(u.pow(2).sum())
            self.vv += float(v.pow(2).sum())

    def l2_uvp(self, var_q: float) -> float:
        """100 % E|T^(x) - T*(x)|^2 / Var(Q)."""
        return 100.0 * self.l2 / self.n / var_q

    def cos(self) -> float:
        """E<u, v> / sqrt(E|u|^2 E|v|^2) (0 when a displacement is identically zero)."""
        den = (self.uu / self.n * self.vv / self.n) ** 0.5
        return self.uv / self.n / den if den > 0 else 0.0


def l2_uvp(t_hat: torch.Tensor, t_star: torch.Tensor, var_q: float) -> float:
    """L2-UVP (%) = 100 * E||T^(x) - T*(x)||^2 / Var(Q), given both maps applied to the same x."""
    _check_same(t_hat, t_star, "l2_uvp")
    acc = Displacements()
    acc.update(t_hat, t_hat, t_star)
    return acc.l2_uvp(var_q)


def cosine(x: torch.Tensor, t_hat: torch.Tensor, t_star: torch.Tensor) -> float:
    """cos = E<T^(x) - x, T*(x) - x> / sqrt(E||T^(x) - x||^2 E||T*(x) - x||^2)."""
    _check_same(t_hat, t_star, "cosine")
    _check_same(x, t_hat, "cosine")
    acc = Displacements()
    acc.update(x, t_hat, t_star)
    return acc.cos()


def mean_shift(a: torch.Tensor, b: torch.Tensor) -> float:
    """||E a - E b||: W1 between two Gaussians of equal covariance, a lower bound on W1 in general."""
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"mean_shift: sample shapes differ, {tuple(a.shape[1:])} vs {tuple(b.shape[1:])}")
    ma, mb = Moments(False), Moments(False)
    ma.update(a)
    mb.update(b)
    return mean_shift_from_moments(ma, mb)


def mean_shift_from_moments(a: Moments, b: Moments) -> float:
    """The mean shift of two streams of samples (see ``mean_shift``)."""
    return float((a.mean() - b.mean()).norm())


def projection_directions(dim: int, n_projections: int = 128, seed: int = 0,
                          device: torch.device | str = "cpu") -> torch.Tensor:
    """Random unit directions for sliced W2, shape (dim, n_projections), float64, fixed by ``seed``."""
    g = torch.Generator(device=device).manual_seed(seed)
    theta = torch.randn(dim, n_projections, generator=g, device=device, dtype=torch.float64)
    return theta / theta.norm(dim=0, keepdim=True)


def sort_projections(p: torch.Tensor, presorted: bool = False) -> torch.Tensor:
    """Projections (n, k) sorted along the samples (each direction's quantiles); sorting contiguous rows of the
    transpose is ~10x faster than along dimension 0."""
    if presorted:
        return p
    return torch.from_numpy(np.sort(p.T.cpu().numpy(), axis=1)).T.to(p.device)


def sliced_from_projections(pa: torch.Tensor, pb: torch.Tensor, presorted_b: bool = False) -> float:
    """Sliced W2 from projected samples (n, k) and (m, k): sqrt of the mean 1-D W2^2 over the k directions.

    Samples may differ in number; the 1-D distances then compare quantiles on a common grid.
    """
    pa, pb = sort_projections(pa), sort_projections(pb, presorted_b)
    if pa.shape[0] != pb.shape[0]:
        q = torch.linspace(0, 1, max(pa.shape[0], pb.shape[0]), dtype=pa.dtype, device=pa.device)
        pa, pb = torch.quantile(pa, q, dim=0), torch.quantile(pb, q, dim=0)
    return float((pa - pb).pow(2).mean()) ** 0.5


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, n_projections: int = 128, seed: int = 0) -> float:
    """Sliced W2: sqrt of the mean over random unit directions of the 1-D W2^2 of the projections."""
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"sliced_wasserstein: sample shapes differ, {tuple(a.shape[1:])} vs {tuple(b.shape[1:])}")
    a, b = a.flatten(1).double(), b.flatten(1).double()
    theta = projection_directions(a.shape[1], n_projections, seed, a.device)
    return sliced_from_projections(a @ theta, b @ theta)


def sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (eigh; negative eigenvalues clipped to 0)."""
    w, v = torch.linalg.eigh((m + m.T) / 2)
    return (v * w.clamp_min(0).sqrt()) @ v.T


_ROOTS: OrderedDict[bytes, torch.Tensor] = OrderedDict()  # square roots of recently seen matrices, by content
_ROOTS_KEPT = 8


def sqrtm_psd_cached(m: torch.Tensor) -> torch.Tensor:
    """``sqrtm_psd`` remembered by the matrix's content: an evaluation compares every map with the same target
    covariance (Q's, on the same held-out samples each time), whose root then costs one hash instead of an eigh."""
    key = hashlib.blake2b(m.detach().contiguous().cpu().numpy().tobytes(), digest_size=16).digest() + \
        str((tuple(m.shape), m.dtype, m.device)).encode()
    root = _ROOTS.get(key)
    if root is None:
        root = _ROOTS[key] = sqrtm_psd(m)
        while len(_ROOTS) > _ROOTS_KEPT:
            _ROOTS.popitem(last=False)
    else:
        _ROOTS.move_to_end(key)
    return root.clone()  # callers may change what they get; the remembered root stays


def bures_sq(m1: torch.Tensor, c1: torch.Tensor, m2: torch.Tensor, c2: torch.Tensor) -> float:
    """Squared W2 between N(m1, c1) and N(m2, c2): |m1-m2|^2 + tr(c1 + c2 - 2 (c2^1/2 c1 c2^1/2)^1/2).

    The second argument's root is remembered (``sqrtm_psd_cached``): pass the target as the second Gaussian."""
    m1, c1, m2, c2 = (t.double() for t in (m1, c1, m2, c2))
    s2 = sqrtm_psd_cached(c2)
    cross = sqrtm_psd(s2 @ c1 @ s2)
    return float((m1 - m2).pow(2).sum() + torch.trace(c1 + c2 - 2 * cross))


def frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance (squared Bures W2 between Gaussians fitted to the samples), as FID computes it."""
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"frechet: sample shapes differ, {tuple(a.shape[1:])} vs {tuple(b.shape[1:])}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("frechet: need at least 2 samples on each side")
    ma, mb = Moments(), Moments()
    ma.update(a)
    mb.update(b)
    return frechet_from_moments(ma, mb)


class Moments:
    """Running mean and covariance of flattened samples in float64, fed chunk by chunk (memory: d x d).

    Sums are taken around the first chunk's mean, so large offsets do not cancel digits.
    """

    def __init__(self, second_order: bool = True):
        self.n, self.second_order = 0, second_order
        self.center = self.s1 = self.s2 = None

    def update(self, x: torch.Tensor) -> None:
        """Add a chunk (n, ...) of samples."""
        x = x.flatten(1).double()
        if self.center is None:
            self.center = x.mean(0)
            self.s1 = torch.zeros_like(self.center)
            self.s2 = x.new_zeros(x.shape[1], x.shape[1]) if self.second_order else None
        z = x - self.center
        self.n += x.shape[0]
        self.s1 += z.sum(0)
        if self.second_order:
            self.s2 += z.T @ z

    def mean(self) -> torch.Tensor:
        """Sample mean."""
        return self.center + self.s1 / self.n

    def cov(self) -> torch.Tensor:
        """Unbiased sample covariance (as ``torch.cov``)."""
        m = self.s1 / self.n
        return (self.s2 - self.n * torch.outer(m, m)) / (self.n - 1)


def frechet_from_moments(a: Moments, b: Moments) -> float:
    """The Fréchet distance of two streams of samples (see ``frechet``)."""
    if a.n < 2 or b.n < 2:
        raise ValueError("frechet: need at least 2 samples on each side")
    return bures_sq(a.mean(), a.cov(), b.mean(), b.cov())


def linear_assignment(cost: np.ndarray) -> np.ndarray:
    """Optimal assignment for a square cost matrix: ``col[i]`` for each row i (minimum total cost; SciPy)."""
    from scipy.optimize import linear_sum_assignment

    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise ValueError(f"linear_assignment: need a square matrix, got shape {cost.shape}")
    return linear_sum_assignment(cost)[1]


def ot_consistency(x: torch.Tensor, tx: torch.Tensor, cost: str = "mean") -> float:
    """Share of the optimal discrete assignment between {x_i} and {T(x_i)} (cost c) that is the identity.

    1 means T is an OT map onto its own image on this sample (the paper's Lemma): GAN maps should score
    ~1 while still being biased. For SR (T(x) larger than x) the cost compares T(x) with bicubic-upsampled x.
    """
    if x.shape[0] != tx.shape[0]:
        raise ValueError(f"ot_consistency: batch sizes differ, {x.shape[0]} vs {tx.shape[0]}")
    col = linear_assignment(pairwise_cost(cost, x, tx).cpu().numpy())
    return float(np.mean(col == np.arange(len(col))))
