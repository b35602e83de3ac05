"""OTS: max-min neural optimal transport (no lambda).

    max_f min_T  E_P[ c(x, T(x)) - f(T(x)) ] + E_Q[ f(y) ]

Per outer step: ``map_steps`` updates of T on E[c(x, T(x)) - f(T(x))], then one update of the
unconstrained potential f on E f(T(x)) - E f(y). At the saddle point T is the unbiased OT map, T#P = Q.
"""

from __future__ import annotations

from pathlib import Path

import torch

from otsr.config import TrainConfig
from otsr.pairs import Pair
from otsr.result import Result
from otsr.state import TrainState
from otsr.trainers.loop import run


def ots_step(s: TrainState, cfg: TrainConfig, pair: Pair) -> torch.Tensor:
    """One outer step; returns [potential loss, last map loss] as a device tensor (no host sync)."""
    g = s.generator
    s.critic.requires_grad_(False)  # map updates need no gradient w.r.t. f's weights
    for _ in range(cfg.map_steps):
        x = pair.sample_p(cfg.batch_size, g)
        tx = s.fwd_map(x)
        map_loss = s.content_cost(x, tx).mean() - s.fwd_critic(tx).mean()
        s.opt_map.zero_grad(set_to_none=True)
        map_loss.backward()
        s.opt_map.step()
        s.after_update(map_loss)
    s.critic.requires_grad_(True)

    x, y = pair.sample_p(cfg.batch_size, g), pair.sample_q(cfg.batch_size, g)
    with torch.no_grad():
        tx = s.fwd_map(x)
    critic_loss = s.fwd_critic(tx).mean() - s.fwd_critic(y).mean()
    s.opt_critic.zero_grad(set_to_none=True)
    critic_loss.backward()
    s.opt_critic.step()
    s.after_update(critic_loss)
    return torch.stack([critic_loss.detach(), map_loss.detach()])


def train(cfg: TrainConfig, pair: Pair, *, report=None, resume=None, out_dir: Path | str | None = None,
          on_log=None) -> Result:
    """Train an OTS map on ``pair``.

    Example:
        >>> from otsr import TrainConfig, make_pair
        >>> from otsr.trainers import ots
        >>> res = ots.train(TrainConfig(steps=20, eval_every=10, final_eval_samples=256, device="cpu"),
        ...                 make_pair("gaussian-shift", dim=4))
        >>> res.status
        'completed'
    """
    if cfg.method != "ots":
        raise ValueError(f"ots.train got a config with method={cfg.method!r}")
    return run(cfg, pair, ots_step, report=report, resume=resume, out_dir=out_dir, on_log=on_log)
