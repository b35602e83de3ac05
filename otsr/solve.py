"""``otsr.solve``: the one-call front door (resolves the config against the pair's recipe, dispatches)."""

from __future__ import annotations

from typing import Any

from otsr.config import TrainConfig
from otsr.pairs import Pair, make_pair
from otsr.recipes import resolve_config
from otsr.result import Result
from otsr.trainers import TRAINERS


def solve(pair: Pair | str, method: str = "ots", *, report=None, out_dir=None, pair_params: dict | None = None,
          **config: Any) -> Result:
    """Train ``method`` ('ots' or 'gan') on ``pair`` (a Pair, a registered name or 'module:Class').

    Settings not given come from the pair's recipe (``otsr.recipes``), then ``TrainConfig``'s defaults.

    Example:
        >>> import otsr
        >>> res = otsr.solve("gaussian-shift", "gan", lam=1.0, steps=10, eval_every=10,
        ...                  final_eval_samples=256, device="cpu", pair_params={"dim": 4})
        >>> sorted(res.metrics)[:3]
        ['bias_frechet', 'bias_mean_shift', 'bias_sliced_w2']
    """
    if isinstance(pair, str):
        pair = make_pair(pair, **(pair_params or {}))
    cfg: TrainConfig = resolve_config(pair, {"method": method, **config})
    return TRAINERS[cfg.method](cfg, pair, report=report, out_dir=out_dir)
