"""Regularized GAN: WGAN-GP plus a content (identity) cost of weight lambda.

    min_T max_D  lambda E_P c(x, T(x)) + E_P[-D(T(x))] + E_Q[D(y)]     (D ~ 1-Lipschitz via gradient penalty)

Per outer step: ``critic_steps`` updates of D on E D(T(x)) - E D(y) + gp * E(||grad D(z)|| - 1)^2, z on
segments between real and generated samples, then one update of T on lambda c(x, T(x)) - D(T(x)).
Its minimiser is an OT map onto T#P, but T#P != Q in general: the bias otsr measures.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from otsr.methods._base import Method, check_count, check_number, register_method


@dataclasses.dataclass(frozen=True)
class GANSettings:
    """The GAN's own settings (flat keys of a config)."""

    BUNDLE: ClassVar[frozenset[str]] = frozenset({"lam", "gp"})  # may differ inside one bundle
    WHAT: ClassVar[dict[str, str]] = {"lam": "lambda"}

    lam: float = 0.0  # GAN content-loss weight lambda >= 0; 0 is a plain WGAN-GP
    gp: float = 10.0  # GAN gradient-penalty weight gamma
    critic_steps: int = 10  # GAN: critic updates per map update

    def __post_init__(self):
        check_number("lam", self.lam)
        if self.lam < 0:
            raise ValueError(f"config key 'lam': lambda={self.lam} must be >= 0")
        check_number("gp", self.gp, 0.0)
        check_count("critic_steps", self.critic_steps)


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """E(||grad D(z)|| - 1)^2 per member at z = eps real + (1 - eps) fake; inputs (K, B, ...), returns (K,).

    The gradient is taken outside any vmap on a (K, B, ...) tensor: members share no weights, so each sample's
    input gradient is its own member's.
    """
    z = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(z).float().sum(), z, create_graph=True)
    return (grad.float().flatten(2).norm(dim=2) - 1).pow(2).mean(1)


class GAN(Method):
    """WGAN-GP with a lambda-weighted content cost."""

    name = "gan"
    summary = "WGAN-GP + lambda * content cost: the regularized GAN whose bias otsr measures"
    losses = ("critic", "map")
    critic_is_potential = False
    Settings = GANSettings
    swept, swept_symbol = "lam", "λ"  # the knob whose bias otsr sweeps
    tiny = {"lam": 1.0, "critic_steps": 2}
    warm_start = "identity"  # started at the Bures map it overshoots its equilibrium (otsr.state)

    def inner_updates(self, cfg) -> int:
        """``critic_steps`` critic updates and one map update."""
        return cfg.critic_steps + 1

    def recipe(self, dim: int | None) -> dict:
        """The critic is held near 1-Lipschitz by its penalty and trains at the map's rate on vector pairs."""
        return {"lr_critic": 1e-3} if dim is not None else {}

    def step(self, s) -> torch.Tensor:
        """Critic updates with the gradient penalty, then one map update; returns [critic, map] losses."""
        gp, lam = s.member_values("gp"), s.member_values("lam")
        for _ in range(s.cfg.critic_steps):
            x, y = s.sample_p(), s.sample_q()
            with torch.no_grad():
                fake = s.fwd_map(x)
            critic_loss = s.critic(fake).mean(1) - s.critic(y).mean(1)
            if s.any_positive("gp"):
                eps = s.uniform(y.shape[1], y.ndim - 2)
                critic_loss = critic_loss + gp * gradient_penalty(s.critic, y, fake, eps)
            s.update(s.opt_critic, critic_loss)

        s.critic.requires_grad_(False)
        x = s.sample_p()
        tx = s.fwd_map(x)
        map_loss = lam * s.content_cost(x, tx).mean(1) - s.critic(tx).mean(1)
        s.update(s.opt_map, map_loss)
        s.critic.requires_grad_(True)
        return torch.stack([critic_loss.detach(), map_loss.detach()], 1)


register_method(GAN())
