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

Values = dict[str, float]  # metric -> value (the objective, and the scheduler's ``also_rank_by`` metrics)


class Rungs:
    """The rung records of one search phase (member key -> reward per ranked metric at each rung).

    ``modes`` names the ranked metrics and their better direction, the objective first. A member goes on when it
    is in the best 1/rf by any of them: with the pair's bias ranked too, halving by L2-UVP keeps the members that
    match Q best (the small-lambda GANs that show what tuning lambda trades), not only the most accurate."""

    def __init__(self, grace: int, reduction_factor: int, max_t: int, modes: dict[str, str]):
        self.rf = reduction_factor
        self.signs = {metric: 1.0 if mode == "max" else -1.0 for metric, mode in modes.items()}
        milestones, m = [], grace
        while m < max_t:
            milestones.append(m)
            m *= reduction_factor
        self.rungs: dict[int, dict[str, Values]] = {m: {} for m in reversed(milestones)}  # largest first

    def _rung(self, key: str, step: int) -> dict[str, Values] | None:
        """The records of the highest rung ``step`` reached that ``key`` has not passed (None: no new rung)."""
        return next((recorded for milestone, recorded in self.rungs.items()
                     if step >= milestone and key not in recorded), None)

    def _rewards(self, values: Values) -> Values:
        return {m: sign * values[m] if math.isfinite(values.get(m, math.nan)) else -math.inf
                for m, sign in self.signs.items()}

    def _goes_on(self, recorded: dict[str, Values], rewards: Values) -> bool:
        """Whether ``rewards`` are in the best 1/rf of the records by some metric. A member with no finite value
        (reward -inf) counts as the lowest, but interpolating between -infs would give NaN (nobody passes), so the
        cutoff is taken over values floored at -1e300 (far below any metric, far from overflowing)."""
        q, floor = (1 - 1 / self.rf) * 100, -1e300
        return any(r >= float(np.percentile(np.maximum([v[m] for v in recorded.values()], floor), q))
                   for m, r in rewards.items())

    def decide(self, key: str, step: int, values: Values) -> bool:
        """Record ``values`` at the highest rung ``step`` reached that ``key`` has not passed; False = stop it."""
        return key not in self.decide_many([(key, step, values)])

    def decide_many(self, items: list[tuple[str, int, Values]]) -> list[str]:
        """Decide for several members at once (a bundle's report); returns the keys to stop.

        Members reaching a rung together are recorded together, then each is judged against every record there, so
        a bundle of K keeps its best 1/rf whatever the members' order (one by one, the first of an empty rung would
        always go on)."""
        arriving = []
        for key, step, values in items:
            recorded = self._rung(key, step)
            if recorded is not None:
                arriving.append((key, recorded, self._rewards(values)))
        for key, recorded, rewards in arriving:
            recorded[key] = rewards
        return [key for key, recorded, rewards in arriving
                if len(recorded) > 1 and not self._goes_on(recorded, rewards)]

    def seed(self, history: dict[str, dict[int, Values]]) -> None:
        """Replay recorded values (member -> {step: {metric: value}}) in step order (a resumed driver): every
        evaluation, as the live rungs saw them, so a milestone between two evaluations is recorded at the first
        evaluation past it, as it was live."""
        events = sorted((int(step), key) for key, h in history.items() for step in h)
        for step, key in events:
            self.decide(key, step, history[key][step])


def start_actor(name: str, grace: int, reduction_factor: int, max_t: int, modes: dict[str, str],
                history: dict[str, dict[int, Values]]):
    """The named rung actor of a phase (restarted empty by a new driver, then seeded from ``history``)."""
    import ray

    actor = ray.remote(num_cpus=0)(Rungs).options(name=name, lifetime=None).remote(grace, reduction_factor, max_t,
                                                                                   modes)
    ray.get(actor.seed.remote(history))
    return actor
