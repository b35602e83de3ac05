"""Transport costs c(x, y), per sample.

The closed forms depend on the scaling, so costs are named: ``mean`` is the per-coordinate mean of
squared differences (PyTorch's ``mse_loss``, what the reference code uses, kappa = 1/d), ``sum`` is
the squared Euclidean norm ||x - y||^2 (kappa = 1) and ``half_mean`` is 1/2 mse (the SR reference, kappa = 1/2d).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

COSTS = ("mean", "sum", "half_mean")


def check_cost(name: str) -> str:
    """Return ``name`` if it is a known cost, else raise naming the valid ones."""
    if name not in COSTS:
        raise ValueError(f"unknown cost {name!r}; valid costs: {', '.join(COSTS)}")
    return name


def upsample_like(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bicubic-upsample images ``x`` to the size of ``y`` (the SR content cost compares T(x) with x upsampled)."""
    if x.shape[-2:] == y.shape[-2:]:
        return x
    return F.interpolate(x.float(), size=y.shape[-2:], mode="bicubic", align_corners=False)


def cost(name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cost between batches ``x`` and ``y`` (n, ...); returns shape (n,).

    For images of different sizes (super-resolution) ``x`` is bicubic-upsampled to ``y``'s size first.
    """
    if x.ndim == 4 and x.shape != y.shape:
        x = upsample_like(x, y)
    sq = (x.float() - y.float()).pow(2).flatten(1)  # fp32 even under bf16 autocast: costs are small differences
    name = check_cost(name)
    return sq.sum(1) if name == "sum" else sq.mean(1) * (0.5 if name == "half_mean" else 1.0)


def pairwise_cost(name: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cost matrix C[i, j] = c(x_i, y_j) for batches (n, ...) and (m, ...); returns shape (n, m)."""
    if x.ndim == 4 and x.shape[1:] != y.shape[1:]:
        x = upsample_like(x, y)
    x2, y2 = x.flatten(1), y.flatten(1)
    sq = torch.cdist(x2.double(), y2.double()).pow(2)
    return sq * kappa(name, x2.shape[1])


def kappa(name: str, dim: int) -> float:
    """Scale kappa with c(x, y) = kappa * ||x - y||^2 for a ``dim``-dimensional sample."""
    name = check_cost(name)
    return {"mean": 1.0 / dim, "half_mean": 0.5 / dim}.get(name, 1.0)
