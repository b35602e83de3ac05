"""``otsr.solve``: the one-call front door (resolves the config against the pair's recipe, trains; list-valued
settings make a bundle)."""

from __future__ import annotations

from typing import Any

from otsr.pairs import Pair, make_pair
from otsr.recipes import resolve_members
from otsr.result import Result
from otsr.trainers import train, train_bundle


def solve(pair: Pair | str, method: str = "ots", *, report=None, out_dir=None, pair_params: dict | None = None,
          **config: Any) -> Result | list[Result]:
    """Train ``method`` ('ots' or 'gan') on ``pair`` (a Pair, a registered name or 'module:Class').

    Settings not given come from the pair's recipe (``otsr.recipes``), then ``TrainConfig``'s defaults. A list
    value makes a bundle trained in one process: lists zip, scalars apply to every member, and the call returns
    one Result per member (``out_dir`` is then a list of folders too).

    Example:
        >>> import otsr
        >>> res = otsr.solve("gaussian-shift", "gan", lam=1.0, steps=10, eval_every=10,
        ...                  final_eval_samples=256, device="cpu", pair_params={"dim": 4})
        >>> sorted(res.metrics)[:3]
        ['bias_frechet', 'bias_mean_shift', 'bias_sliced_w2']
        >>> [r.config.lam for r in otsr.solve("gaussian-shift", "gan", lam=[0.1, 1.0], steps=10, eval_every=10,
        ...                                   final_eval_samples=256, device="cpu", pair_params={"dim": 4})]
        [0.1, 1.0]
    """
    if isinstance(pair, str):
        pair = make_pair(pair, **(pair_params or {}))
    bundled = any(isinstance(v, (list, tuple)) for v in config.values())
    members = resolve_members(pair, {"method": method, **config})
    if not bundled:
        return train(members[0], pair, report=report, out_dir=out_dir)
    return train_bundle(members, pair, report=report, out_dirs=out_dir)
