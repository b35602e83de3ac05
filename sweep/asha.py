"""Asynchronous successive halving (ASHA) per member configuration, so that a bundle's members are stopped
one by one: the rule of Ray Tune's ASHAScheduler (rungs at grace * rf^i; at the first rung a member reaches, it
goes on only if its objective is in the best 1/rf of those recorded there so far), applied to members.

The rungs live in a named Ray actor of the driver's job, which trials on any node ask at each evaluation. A
resumed driver rebuilds the rungs from the members' recorded objective values.
"""

from __future__ import annotations

import math

import numpy as np


class Rungs:
    """The rung records of one search phase (member key -> objective at each rung)."""

    def __init__(self, grace: int, reduction_factor: int, max_t: int, mode: str):
        self.rf, self.sign = reduction_factor, (1.0 if mode == "max" else -1.0)
        milestones, m = [], grace
        while m < max_t:
            milestones.append(m)
            m *= reduction_factor
        self.rungs: dict[int, dict[str, float]] = {m: {} for m in reversed(milestones)}  # largest first

    def decide(self, key: str, step: int, value: float) -> bool:
        """Record ``value`` at the highest rung ``step`` reached that ``key`` has not passed; False = stop it."""
        reward = self.sign * value if math.isfinite(value) else -math.inf
        for milestone, recorded in self.rungs.items():
            if step < milestone or key in recorded:
                continue
            go_on = True
            if recorded:
                cutoff = float(np.nanpercentile(list(recorded.values()), (1 - 1 / self.rf) * 100))
                go_on = reward >= cutoff
            recorded[key] = reward
            return go_on
        return True

    def decide_many(self, items: list[tuple[str, int, float]]) -> list[str]:
        """Decide for several members at once; returns the keys to stop."""
        return [key for key, step, value in items if not self.decide(key, step, value)]

    def seed(self, history: dict[str, dict[int, float]]) -> None:
        """Replay recorded objective values (member -> {step: value}) in step order (a resumed driver)."""
        events = sorted((step, key, v) for key, h in history.items() for step, v in h.items())
        for step, key, v in events:
            if int(step) in self.rungs:
                self.decide(key, int(step), v)


def start_actor(name: str, grace: int, reduction_factor: int, max_t: int, mode: str,
                history: dict[str, dict[int, float]]):
    """The named rung actor of a phase (restarted empty by a new driver, then seeded from ``history``)."""
    import ray

    actor = ray.remote(num_cpus=0)(Rungs).options(name=name, lifetime=None).remote(grace, reduction_factor, max_t,
                                                                                   mode)
    ray.get(actor.seed.remote(history))
    return actor
