"""Gaussian fits of P and Q: the scales the networks work in and the closed-form (Bures) warm start.

For quadratic costs the OT map between N(m_p, S) and N(m_q, C) is x -> m_q + A (x - m_p) with
A = S^-1/2 (S^1/2 C S^1/2)^1/2 S^-1/2. Starting the map there (and the potential at the matching quadratic)
leaves the networks only the non-Gaussian part of T* to learn.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from otsr.pairs import Pair, gaussian_ot_matrix
from otsr.sampling import draw, draw_q

FIT_SAMPLES = 1 << 14
FIT_SEED = 2**31 - 3  # fit samples are independent of training and evaluation samples
MAX_WARM_DIM = 1024  # above this a d x d fit is not worth it (images): no warm start


@dataclasses.dataclass(frozen=True)
class GaussianFit:
    """Means, covariances (float64) and scalar scales sqrt(Var / d) of P and Q; ``warm``: use the Bures map."""

    mean_p: torch.Tensor
    mean_q: torch.Tensor
    cov_p: torch.Tensor
    cov_q: torch.Tensor
    scale_p: float
    scale_q: float
    warm: bool

    @classmethod
    def identity(cls, dim: int) -> GaussianFit:
        """Placeholder of the right shapes (no warm start, unit scales); a checkpoint's buffers replace it."""
        z, eye = torch.zeros(dim, dtype=torch.float64), torch.eye(dim, dtype=torch.float64)
        return cls(z, z, eye, eye, 1.0, 1.0, False)

    def bures_matrix(self) -> torch.Tensor:
        """A of the Bures map (the identity without a warm start)."""
        if not self.warm:
            return torch.eye(self.mean_p.shape[0], dtype=torch.float64)
        return gaussian_ot_matrix(self.cov_p, self.cov_q)


def fit_gaussians(pair: Pair, warm: bool, n: int = FIT_SAMPLES, device: torch.device | str = "cpu") -> GaussianFit:
    """Fit P and Q of a vector pair, or of a same-shape image pair of at most MAX_WARM_DIM values (flattened), on
    ``n`` samples drawn with a fixed seed.

    Without ``warm`` only the scales are kept (the map starts at the identity, the potential at zero).
    """
    if tuple(pair.shape) != tuple(pair.shape_q) or (len(pair.shape) != 1 and math.prod(pair.shape) > MAX_WARM_DIM):
        raise ValueError(f"fit_gaussians: vector pairs or same-shape images of at most {MAX_WARM_DIM} values, not "
                         f"{tuple(pair.shape)} -> {tuple(pair.shape_q)}")
    g = torch.Generator(device=device).manual_seed(FIT_SEED)
    x = draw(pair, n, g, False)[0].double().cpu().flatten(1)  # draw/draw_q: samplers may need autograd (T* = grad
    y = draw_q(pair, n, g).double().cpu().flatten(1)  # psi); images are fitted as flat vectors
    d = x.shape[1]
    cov_p, cov_q = torch.cov(x.T).reshape(d, d), torch.cov(y.T).reshape(d, d)
    scale_p, scale_q = math.sqrt(float(cov_p.trace()) / d), math.sqrt(float(cov_q.trace()) / d)
    if not warm:
        z = torch.zeros(d, dtype=torch.float64)
        return GaussianFit(z, z, cov_p, cov_q, scale_p, scale_q, False)
    ridge = 1e-6 * torch.eye(d, dtype=torch.float64)  # degenerate directions (e.g. a constant coordinate)
    return GaussianFit(x.mean(0), y.mean(0), cov_p + ridge * scale_p**2, cov_q + ridge * scale_q**2, scale_p,
                       scale_q, True)
