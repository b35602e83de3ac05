"""Default training settings per kind of pair and size: what a user who changes nothing gets.

``TrainConfig``'s own defaults are the published reference setups for images (batch 64, lr 1e-4, 10 inner
steps); vector pairs and super-resolution get the settings measured to converge here (README "OTS at scale").
Anything the user sets wins; the resolved config is what runs, is logged and is stored in checkpoints.
"""

from __future__ import annotations

from typing import Any

from otsr.config import TrainConfig
from otsr.pairs import Pair


def vector_steps(dim: int) -> int:
    """Outer steps a vector pair of dimension ``dim`` needs with the vector recipe."""
    return 2000 if dim <= 16 else 6000 if dim <= 64 else 10000


def recipe(pair: Pair, method: str) -> dict[str, Any]:
    """TrainConfig fields that differ from the defaults for ``pair`` and ``method``."""
    shape, shape_q = tuple(pair.shape), tuple(pair.shape_q)
    if len(shape) == 1:
        steps = vector_steps(shape[0])
        # OTS: the potential learns 3x slower than the map (equal rates oscillate and diverge at D = 64);
        # the WGAN-GP critic is held near 1-Lipschitz by its penalty and trains at the map's rate.
        lr_critic = 3e-4 if method == "ots" else 1e-3
        return {"batch_size": 1024, "lr_map": 1e-3, "lr_critic": lr_critic, "lr_schedule": "cosine", "map_steps": 10,
                "critic_steps": 10, "steps": steps, "eval_every": steps // 4, "log_every": 100}
    if shape != shape_q:  # unpaired SR: the AIM19 reference setup (EDSR 64 x 128, 15 map steps, 1/2 MSE)
        return {"batch_size": 8, "map_steps": 15, "critic_steps": 5, "cost": "half_mean", "width": 128, "depth": 64,
                "eval_every": 2000, "checkpoint_every": 2000, "eval_samples": 2048, "final_eval_samples": 4096}
    return {}


def resolve_config(pair: Pair, settings: dict[str, Any]) -> TrainConfig:
    """The config that runs: the pair's recipe for ``settings['method']`` overridden by ``settings``."""
    method = settings.get("method", TrainConfig.method)
    return TrainConfig.from_dict({**recipe(pair, method), **settings})
