"""Regularized GAN: WGAN-GP plus a content (identity) cost of weight lambda.

    min_T max_D  lambda E_P c(x, T(x)) + E_P[-D(T(x))] + E_Q[D(y)]     (D ~ 1-Lipschitz via gradient penalty)

Per outer step: ``critic_steps`` updates of D on E D(T(x)) - E D(y) + gp * E(||grad D(z)|| - 1)^2, z on
segments between real and generated samples, then one update of T on lambda c(x, T(x)) - D(T(x)).
Its minimiser is an OT map onto T#P, but T#P != Q in general: the bias otsr measures.
"""

from __future__ import annotations

from pathlib import Path

import torch

from otsr.config import TrainConfig
from otsr.pairs import Pair
from otsr.result import Result
from otsr.state import TrainState
from otsr.trainers.loop import run


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """E(||grad D(z)|| - 1)^2 at random points z on the segments between real and fake samples."""
    eps = torch.rand(real.shape[0], *([1] * (real.ndim - 1)), generator=g, device=real.device)
    z = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(z).float().sum(), z, create_graph=True)
    return (grad.float().flatten(1).norm(dim=1) - 1).pow(2).mean()


def gan_step(s: TrainState, cfg: TrainConfig, pair: Pair) -> torch.Tensor:
    """One outer step; returns [last critic loss, map loss] as a device tensor (no host sync)."""
    g = s.generator
    for _ in range(cfg.critic_steps):
        x, y = pair.sample_p(cfg.batch_size, g), pair.sample_q(cfg.batch_size, g)
        with torch.no_grad():
            fake = s.fwd_map(x)
        critic_loss = s.critic(fake).mean() - s.critic(y).mean()
        if cfg.gp > 0:
            critic_loss = critic_loss + cfg.gp * gradient_penalty(s.critic, y, fake, g)
        s.opt_critic.zero_grad(set_to_none=True)
        critic_loss.backward()
        s.opt_critic.step()
        s.after_update(critic_loss)

    s.critic.requires_grad_(False)
    x = pair.sample_p(cfg.batch_size, g)
    tx = s.fwd_map(x)
    map_loss = cfg.lam * s.content_cost(x, tx).mean() - s.critic(tx).mean()
    s.opt_map.zero_grad(set_to_none=True)
    map_loss.backward()
    s.opt_map.step()
    s.after_update(map_loss)
    s.critic.requires_grad_(True)
    return torch.stack([critic_loss.detach(), map_loss.detach()])


def train(cfg: TrainConfig, pair: Pair, *, report=None, resume=None, out_dir: Path | str | None = None,
          on_log=None) -> Result:
    """Train a regularized WGAN-GP map on ``pair`` (``cfg.lam`` is lambda)."""
    if cfg.method != "gan":
        raise ValueError(f"gan.train got a config with method={cfg.method!r}")
    return run(cfg, pair, gan_step, report=report, resume=resume, out_dir=out_dir, on_log=on_log)
