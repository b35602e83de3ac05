"""OTS: max-min neural optimal transport (no lambda).

    max_f min_T  E_P[ c(x, T(x)) - f(T(x)) ] + E_Q[ f(y) ]

Per outer step: ``map_steps`` updates of T on E[c(x, T(x)) - f(T(x))], then one update of the
unconstrained potential f on E f(T(x)) - E f(y). At the saddle point T is the unbiased OT map, T#P = Q.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from otsr.costs import kappa as cost_kappa
from otsr.methods._base import Method, check_count, check_number, register_method


def potential_inverse(f, y: torch.Tensor, kap: float, create_graph: bool = False) -> torch.Tensor:
    """y - grad f(y) / (2 kappa) for member batches y (K, B, ...): a potential's estimate of T*^-1(y), exact for the
    optimal potential of the cost kappa |x - y|^2 at y = T*(x). Detached unless ``create_graph`` (to train f on it)."""
    y = y.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(y).sum(), y, create_graph=create_graph)
    x_hat = y - grad / (2 * kap)
    return x_hat if create_graph else x_hat.detach()


@dataclasses.dataclass(frozen=True)
class OTSSettings:
    """OTS's own settings (flat keys of a config); none may differ inside a bundle."""

    map_steps: int = 10  # OTS: map updates per potential update
    potential_gain: float = 1.0  # OTS: multiplies the potential's learned part (its parametrisation, not the
    # objective): larger pulls the map sooner, too large makes map and potential oscillate
    potential_contrast: float = 0.0  # OTS, ResNet potentials: > 0 also feeds the high-pass band divided by the
    # crop's next-octave RMS (this floor, in Q-normalised units; 0.01 measured): the potential then separates HR from
    # bicubic at once, but on the SR demo the map learns to please it (README "Images"), so it is off by default
    potential_batch: int = 0  # OTS: samples of P and of Q per potential update (0 = batch_size): a larger batch
    # only for the potential, the network OTS learns slowest, at the price of one update
    readout_steps: int = 0  # OTS, same-shape pairs: after the game, this many regression updates of the map on the
    # potential's inverse map (y - grad f(y) / 2 kappa -> y, y from Q): the map read off the potential. convex-images:
    # 31.5 -> 19.9 % L2-UVP; convex-mixture D = 64, where T* expands P: 4.1 -> 31.7 % (README "Images"); 0 = off

    def __post_init__(self):
        check_count("map_steps", self.map_steps)
        if isinstance(self.potential_batch, bool) or not isinstance(self.potential_batch, int) or \
                self.potential_batch < 0:
            raise ValueError(f"config key 'potential_batch': {self.potential_batch!r} must be an integer >= 0 "
                             "(0 = batch_size)")
        if isinstance(self.readout_steps, bool) or not isinstance(self.readout_steps, int) or self.readout_steps < 0:
            raise ValueError(f"config key 'readout_steps': {self.readout_steps!r} must be an integer >= 0 (0 = off)")
        check_number("potential_gain", self.potential_gain, 0.0, strict=True)
        check_number("potential_contrast", self.potential_contrast, 0.0)


class OTS(Method):
    """Max-min neural OT: the map against an unconstrained potential."""

    name = "ots"
    summary = "max-min neural optimal transport (no lambda): aims at the unbiased OT map"
    losses = ("potential", "map")
    critic_is_potential = True
    Settings = OTSSettings
    warm_start = "bures"
    reference = True  # no knob: the unbiased map the swept methods are compared against
    tiny = {"map_steps": 2}

    def inner_updates(self, cfg) -> int:
        """``map_steps`` map updates and one potential update."""
        return cfg.map_steps + 1

    def vector_steps(self, dim: int) -> int:
        """Up to D = 16 small batches and few map steps per potential step: many cheap updates."""
        return 15000 if dim <= 16 else 9000 if dim <= 64 else 10000

    def recipe(self, dim: int | None) -> dict:
        """Up to D = 16: batch 256, 3 map updates per potential update and the potential at 0.6x the map's rate,
        so the potential (what OTS learns slowest) gets many cheap updates (icnn-mixture seed 0: 1.08 % vs 2.67 %
        L2-UVP for about the old recipe's CPU time; 0.20-1.06 % on the four quality pairs). Above: batch 1024,
        10 map updates, potential at 0.3x: small batches diverged on convex-mixture at D = 64 (batch 256 or 512
        with 5 map updates: 1.7e6 % and 214 % at the end, though 3.85 % on icnn-mixture seed 1); this recipe
        gives 4.21 % there but also jumped on convex-mixture at D = 64 (4.97 % at step 4,500, 17.7 % at the end).
        Above D = 64 the potential runs at 0.1x: at 0.3x convex-mixture at D = 128 diverged (29 % at step 1,000,
        150 % at 3,000, the potential's loss swinging wider and wider), at 0.1x it fell without a jump to 16.8 % in
        3,000 steps; at D = 64 0.1x was slower throughout and ended at 5.86 % against 4.17 % (convex-mixture 0, a
        0.3x run without a jump), so D = 64 keeps 0.3x. From D = 17 to 64, 9,000 steps with the map's weight average
        at 0.995: 3.96 / 3.75 / 3.67 / 4.26 % against 6,000 steps without it, 3.77 / 4.21 / 4.07 / 4.71 %
        (convex-mixture 0, held-out icnn-mixture 1-3; quality bench, README "OTS at scale")."""
        if dim is None:
            return {}
        if dim <= 16:
            return {"batch_size": 256, "map_steps": 3, "lr_critic": 6e-4}
        if dim <= 64:
            return {"lr_critic": 3e-4, "map_ema": 0.995}
        return {"lr_critic": 1e-4}

    def check_pair(self, cfg, pair) -> None:
        """The read-out inverts the potential in Q's space, so it needs P and Q in one space."""
        if cfg.readout_steps and tuple(pair.shape) != tuple(pair.shape_q):
            raise ValueError(f"config key 'readout_steps'={cfg.readout_steps}: the read-out needs P and Q of one shape "
                             f"(here {tuple(pair.shape)} -> {tuple(pair.shape_q)}); leave it at 0 for this pair")

    def finish(self, s) -> str | None:
        """The read-out (``readout_steps``): for the cost kappa |x - y|^2 the optimal potential's gradient gives the
        inverse map, x = y - grad f(y) / (2 kappa) at y = T*(x); the map is regressed onto those pairs, reading f only
        on Q's support, where the game trains it (the map's own loss also reads f off it). The map's rate on a
        cosine from ``lr_map`` to 0; frozen members keep their weights."""
        n = s.cfg.readout_steps
        if not n:
            return None
        kap = cost_kappa(s.cfg.cost, math.prod(s.pair.shape_q))
        s.critic.requires_grad_(False)
        try:
            for t in range(n):
                s.set_lr(0.5 * (1 + math.cos(math.pi * t / n)))
                y = s.sample_q()
                x_hat = potential_inverse(s.fwd_critic, y, kap)
                s.update(s.opt_map, (s.fwd_map(x_hat) - y).flatten(2).pow(2).mean(2).mean(1))
        finally:
            s.critic.requires_grad_(True)
        return f"map read out from the potential in {n} updates"

    def step(self, s) -> torch.Tensor:
        """Map updates against the frozen potential, then one potential update; returns [potential, map] losses."""
        s.critic.requires_grad_(False)  # map updates need no gradient w.r.t. f's weights
        for _ in range(s.cfg.map_steps):
            x = s.sample_p()
            tx = s.fwd_map(x)
            map_loss = s.content_cost(x, tx).mean(1) - s.fwd_critic(tx).mean(1)
            s.update(s.opt_map, map_loss)
        s.critic.requires_grad_(True)

        n = s.cfg.potential_batch or None
        x, y = s.sample_p(n), s.sample_q(n)
        with torch.no_grad():
            tx = s.fwd_map(x)
        potential_loss = s.fwd_critic(tx).mean(1) - s.fwd_critic(y).mean(1)
        s.update(s.opt_critic, potential_loss)
        return torch.stack([potential_loss.detach(), map_loss.detach()], 1)


register_method(OTS())
