"""Gaussian pairs with closed-form OT maps: a pure shift, and general means and covariances."""

from __future__ import annotations

import dataclasses
import math

import torch

from otsr.metric_registry import Headline
from otsr.metrics import sqrtm_psd
from otsr.pairs._base import Pair, SampleMetric, cached_to


@dataclasses.dataclass(repr=False)
class GaussianShift(Pair):
    """P = N(0, I_d), Q = N(delta, I_d) with delta = shift * (1, ..., 1) / sqrt(d), so ||delta|| = shift.

    The OT map is T*(x) = x + delta; ``otsr.theory`` has the regularized-GAN solution in closed form.
    """

    name = "gaussian-shift"
    dim_range = (1, 1 << 16)

    dim: int = 16  # dimension d
    shift: float = 4.0  # ||delta||

    def __post_init__(self):
        self.check_dim(self.dim)
        if not (math.isfinite(self.shift) and self.shift > 0):
            raise ValueError(f"pair {self.name!r}: shift={self.shift} must be a positive number")
        self._cache: dict = {}

    @property
    def shape(self) -> tuple[int, ...]:
        """One sample is a ``(dim,)`` vector."""
        return (self.dim,)

    def delta(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The mean of Q, shape ``(dim,)``."""
        return torch.full((self.dim,), self.shift / math.sqrt(self.dim), device=device)

    def sample_p(self, n, generator):
        """Standard normal samples."""
        return torch.randn(n, self.dim, generator=generator, device=generator.device)

    def sample_q(self, n, generator):
        """Standard normal samples shifted by delta."""
        return self.sample_p(n, generator) + self.delta(generator.device)

    def sample_with_target(self, n, generator):
        """x ~ P and T*(x) = x + delta."""
        x = self.sample_p(n, generator)
        return x, x + self.delta(generator.device)

    def var_q(self) -> float:
        """Trace of I_d."""
        return float(self.dim)

    def headline(self) -> Headline:
        """The mean shift is this pair's bias: ``otsr.theory`` gives the GAN's in closed form."""
        return dataclasses.replace(super().headline(), bias="bias_mean_shift")

    def metrics(self) -> list[SampleMetric]:
        """``shift``: the learned translation s = E<T(x) - x, delta/||delta||>, comparable with ``otsr.theory``."""
        return [SampleMetric("shift", lambda x, tx: (tx - x) @ (self.delta(x.device) / self.shift))]


def _random_spd(dim: int, g: torch.Generator, scale: float) -> torch.Tensor:
    """A random well-conditioned SPD matrix with eigenvalues in [0.25, 1] * scale^2 (float64)."""
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    eig = (0.25 + 0.75 * torch.rand(dim, generator=g, dtype=torch.float64)) * scale**2
    return (q * eig) @ q.T


def gaussian_ot_matrix(cov_p: torch.Tensor, cov_q: torch.Tensor) -> torch.Tensor:
    """Matrix A of the quadratic-cost OT map x -> m_q + A (x - m_p) between N(., cov_p) and N(., cov_q).

    A = S^-1/2 (S^1/2 C S^1/2)^1/2 S^-1/2 with S = cov_p, C = cov_q.
    """
    s_half = sqrtm_psd(cov_p)
    s_inv_half = torch.linalg.inv(s_half)
    return s_inv_half @ sqrtm_psd(s_half @ cov_q @ s_half) @ s_inv_half


@dataclasses.dataclass(repr=False)
class Gaussian(Pair):
    """P = N(m_p, S), Q = N(m_q, C) with random means and covariances drawn from ``seed``.

    The OT map is linear: T*(x) = m_q + A (x - m_p) (see ``gaussian_ot_matrix``).
    """

    name = "gaussian"
    dim_range = (1, 1024)

    dim: int = 16  # dimension d
    seed: int = 0  # draws the means and covariances
    scale: float = 1.0  # covariance eigenvalues lie in [0.25, 1] * scale^2

    def __post_init__(self):
        self.check_dim(self.dim)
        g = torch.Generator().manual_seed(self.seed)
        self.mean_p = torch.randn(self.dim, generator=g, dtype=torch.float64)
        self.mean_q = torch.randn(self.dim, generator=g, dtype=torch.float64) + 2.0
        self.cov_p = _random_spd(self.dim, g, self.scale)
        self.cov_q = _random_spd(self.dim, g, self.scale)
        self.ot_matrix = gaussian_ot_matrix(self.cov_p, self.cov_q)
        self._chol_p = torch.linalg.cholesky(self.cov_p).float()
        self._chol_q = torch.linalg.cholesky(self.cov_q).float()
        self._cache: dict = {}

    @property
    def shape(self) -> tuple[int, ...]:
        """One sample is a ``(dim,)`` vector."""
        return (self.dim,)

    def _t(self, key: str, device) -> torch.Tensor:
        return cached_to(self._cache, key, getattr(self, key).float(), device)

    def sample_p(self, n, generator):
        """m_p + L_p z."""
        z = torch.randn(n, self.dim, generator=generator, device=generator.device)
        return self._t("mean_p", generator.device) + z @ self._t("_chol_p", generator.device).T

    def sample_q(self, n, generator):
        """m_q + L_q z."""
        z = torch.randn(n, self.dim, generator=generator, device=generator.device)
        return self._t("mean_q", generator.device) + z @ self._t("_chol_q", generator.device).T

    def true_map(self, x: torch.Tensor) -> torch.Tensor:
        """T*(x) = m_q + A (x - m_p)."""
        d = x.device
        return self._t("mean_q", d) + (x - self._t("mean_p", d)) @ self._t("ot_matrix", d).T

    def sample_with_target(self, n, generator):
        """x ~ P and the linear OT map of x."""
        x = self.sample_p(n, generator)
        return x, self.true_map(x)

    def var_q(self) -> float:
        """Trace of C."""
        return float(torch.trace(self.cov_q))
