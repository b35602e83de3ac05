"""Closed forms for the ``gaussian-shift`` pair: OT map, regularized-GAN equilibria, their bias.

P = N(0, I_d), Q = N(delta, I_d), cost c(x, y) = kappa ||x - y||^2 (kappa = 1/d for the 'mean' cost).
With 1-Lipschitz critics the regularized GAN learns T(x) = x + s* delta/||delta||,
s*(lambda) = min(||delta||, 1 / (2 kappa lambda)); with WGAN-GP (penalty gamma) and a linear critic of
slope a = 1 + (||delta|| - s) / (2 gamma) the equilibrium is
s_GP(lambda, gamma) = min(||delta||, (1 + ||delta|| / (2 gamma)) / (2 kappa lambda + 1 / (2 gamma))).
"""

from __future__ import annotations

import math

import torch


def gan_shift(lam: float, delta_norm: float, kappa: float) -> float:
    """s*(lambda): the shift learned by the regularized GAN with 1-Lipschitz critics."""
    if lam < 0:
        raise ValueError(f"lambda={lam} must be >= 0")
    return delta_norm if lam == 0 else min(delta_norm, 1.0 / (2.0 * kappa * lam))


def gan_gp_shift(lam: float, gamma: float, delta_norm: float, kappa: float) -> float:
    """s_GP(lambda, gamma): the WGAN-GP equilibrium shift with a linear critic."""
    if lam < 0 or gamma <= 0:
        raise ValueError(f"need lambda >= 0 and gamma > 0, got lambda={lam}, gamma={gamma}")
    return min(delta_norm, (1.0 + delta_norm / (2.0 * gamma)) / (2.0 * kappa * lam + 1.0 / (2.0 * gamma)))


def gp_critic_slope(shift: float, gamma: float, delta_norm: float) -> float:
    """Optimal slope a = 1 + (||delta|| - s) / (2 gamma) of a linear WGAN-GP critic against shift s."""
    return 1.0 + (delta_norm - shift) / (2.0 * gamma)


def shift_bias(shift: float, delta_norm: float) -> float:
    """W1(T#P, Q) = ||delta|| - s for the translation by s along delta (also the mean shift)."""
    return abs(delta_norm - shift)


def shift_l2_uvp(shift: float, delta_norm: float, dim: int) -> float:
    """L2-UVP (%) of the translation by s: 100 (||delta|| - s)^2 / d."""
    return 100.0 * (delta_norm - shift) ** 2 / dim


def unbiased_lambda_max(delta_norm: float, kappa: float) -> float:
    """Largest lambda for which the 1-Lipschitz GAN is unbiased: 1 / (2 kappa ||delta||)."""
    return 1.0 / (2.0 * kappa * delta_norm)


def gaussian_w2(mean1: torch.Tensor, cov1: torch.Tensor, mean2: torch.Tensor, cov2: torch.Tensor) -> float:
    """Closed-form W2 (quadratic cost ||x - y||^2) between two Gaussians (Bures-Wasserstein)."""
    from otsr.metrics import bures_sq

    return math.sqrt(max(0.0, bures_sq(mean1, cov1, mean2, cov2)))
