"""Drawing from a pair with autograd available: samplers may need gradients (T* = grad psi of a network) even
where the caller runs under ``torch.no_grad`` (evaluation, fits); the draws come back detached."""

from __future__ import annotations

import torch

from otsr.pairs import Pair


def draw(pair: Pair, n: int, g: torch.Generator, target: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` samples x of P (and T*(x) when ``target``), drawn with autograd available and detached."""
    with torch.enable_grad():
        if target:
            x, t_star = pair.sample_with_target(n, g)
            return x.detach(), t_star.detach()
        return pair.sample_p(n, g).detach(), None


def draw_q(pair: Pair, n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` samples of Q, drawn with autograd available and detached."""
    with torch.enable_grad():
        return pair.sample_q(n, g).detach()


def var_q(pair: Pair) -> float:
    """``pair.var_q()`` with autograd available (a pair may estimate it from samples of a gradient map)."""
    with torch.enable_grad():
        return float(pair.var_q())
