"""Asynchronous successive halving (ASHA) per member configuration, so that a bundle's members are stopped
one by one: the rule of Ray Tune's ASHAScheduler (rungs at grace * rf^i; at the first rung a member reaches, it
goes on only if its objective is in the best 1/rf of those recorded there so far, its own and those of the
members arriving with it included), applied to members. A bundle then drops the members it stops
(``otsr.trainers``), so halving saves wall time.

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

    def _rung(self, key: str, step: int) -> dict[str, float] | None:
        """The records of the highest rung ``step`` reached that ``key`` has not passed (None: no new rung)."""
        return next((recorded for milestone, recorded in self.rungs.items()
                     if step >= milestone and key not in recorded), None)

    def _goes_on(self, recorded: dict[str, float], reward: float) -> bool:
        cutoff = float(np.nanpercentile(list(recorded.values()), (1 - 1 / self.rf) * 100))
        return reward >= cutoff

    def decide(self, key: str, step: int, value: float) -> bool:
        """Record ``value`` at the highest rung ``step`` reached that ``key`` has not passed; False = stop it."""
        return key not in self.decide_many([(key, step, value)])

    def decide_many(self, items: list[tuple[str, int, float]]) -> list[str]:
        """Decide for several members at once (a bundle's report); returns the keys to stop.

        Members reaching a rung together are recorded together, then each is judged against every record there, so
        a bundle of K keeps its best 1/rf whatever the members' order (one by one, the first of an empty rung would
        always go on)."""
        arriving = []
        for key, step, value in items:
            recorded = self._rung(key, step)
            if recorded is not None:
                arriving.append((key, recorded, self.sign * value if math.isfinite(value) else -math.inf))
        for key, recorded, reward in arriving:
            recorded[key] = reward
        return [key for key, recorded, reward in arriving if len(recorded) > 1 and not self._goes_on(recorded, reward)]

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
