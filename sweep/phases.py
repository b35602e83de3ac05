"""Phases run side by side as one Ray Tune experiment: the trainable with its resources, the bundle searcher, the
member recorder, the per-member ASHA actors, the signal-aware stopper, and the verdict from otsr's own records.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from otsr.metric_registry import metric_direction
from sweep import interrupts
from sweep.asha import start_actor
from sweep.folder import SweepState
from sweep.recorder import MemberRecorder
from sweep.searcher import BundleSearcher, Phase, PhaseRun
from sweep.space import SweepSpec, ray_request
from sweep.studies import StudyTeller
from sweep.tracking import Tracker
from sweep.trial import run_trial

REUSE_ACTORS = True  # a trial starts in the previous trial's worker: ~0.2 s instead of ~4 s


@dataclasses.dataclass
class Options:
    """Where and how a sweep runs (the CLI's options)."""

    address: str | None = None  # None: start Ray in-process; 'auto' or 'ray://host:port': an existing cluster
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite in the working directory
    storage: str = "sweeps"  # parent folder of sweep folders (shared storage on clusters)
    workdir: str = "."  # where the embedded MLflow store lives
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # samples, steps, seeds, cpu, gpu
    num_cpus: int | None = None  # for in-process Ray: CPUs to offer (default: all)
    verbose: int = 1  # 0 silent, 1 one line per member, 2 Tune's status table, 3 Tune's full output


def describe(phase: Phase, spec: SweepSpec) -> str:
    """The phase's header line."""
    k = phase.method.bundle
    bundled = f", {k} per trial" if k > 1 else ""
    if phase.kind == "search":
        return f"Optuna search over {', '.join(phase.method.search)} ({phase.method.samples} configurations{bundled})"
    if phase.kind == "best":
        return f"best {phase.method.method} configuration with seeds 1..{spec.seeds - 1}{bundled}"
    return f"{phase.method.method} with seeds 0..{spec.seeds - 1}{bundled}"


def _trainable(spec: SweepSpec):
    from ray import tune

    res = spec.resources
    return tune.with_resources(run_trial, {"cpu": res["cpu"], "gpu": res["gpu"], **res["custom"]})


PENDING_ENV = "TUNE_MAX_PENDING_TRIALS_PG"  # read by Tune when a Tuner starts


class _EnvDefault:
    """Environment variables set for the length of one Tune run unless the user set them; restored after."""

    def __init__(self):
        self.names: list[str] = []

    def setdefault(self, name: str, value: str) -> None:
        if name not in os.environ:
            self.names.append(name)
            os.environ[name] = value

    def restore(self) -> None:
        for name in self.names:
            os.environ.pop(name, None)
        self.names.clear()


def trial_slots(spec: SweepSpec) -> int:
    """Trials Ray can run at once now (``slots_for`` what it offers)."""
    import ray

    return slots_for(ray.cluster_resources(), spec.resources)


def slots_for(total: dict[str, float], res: dict) -> int:
    """Trials that fit in ``total`` resources: each resource (CPUs, GPUs, custom) over a trial's share, capped by
    max_concurrent; at least 1 (a cluster that reports none yet, e.g. before autoscaling)."""
    # + 1e-6: 2 / 0.2 fits 10 trials, where 2 // 0.2 == 9.0
    slots = [int(total.get(name, 0) / share + 1e-6) for name, share in ray_request(res).items() if share]
    if res["max_concurrent"]:
        slots.append(int(res["max_concurrent"]))
    return max(1, min(slots)) if slots else 1


def _asha(spec: SweepSpec, phase: Phase, run: PhaseRun, state: SweepState) -> str | None:
    """Start the phase's rung actor (search phases with ASHA); returns its name."""
    sched = spec.scheduler
    if phase.kind != "search" or sched["type"] != "asha" or spec.multi_objective:
        return None
    name = f"otsr-asha-{state.folder.name}-{phase.name}"
    objective = spec.objectives[0]
    modes = {objective.metric: objective.mode} | {m: metric_direction(m) for m in sched["also_rank_by"]}
    run.asha_actor = start_actor(name, min(sched["grace_period"], spec.steps), sched["reduction_factor"], spec.steps,
                                 modes, rung_history(objective.metric, state.members(phase.name)))
    return name


def rung_history(objective: str, records: dict[str, Any]) -> dict[str, dict[int, dict[str, float]]]:
    """What the members reported at each evaluation that a rung actor ranks by (member -> {step: {metric: value}}):
    the objective and the ``also_rank_by`` metrics, from the driver's records (a resumed driver replays them)."""
    return {k: {int(s): {objective: v, **m.ranks.get(s, {})} for s, v in m.objective.items()}
            for k, m in records.items()}


def _progress():
    from ray.tune import CLIReporter

    return CLIReporter(metric_columns=["step"], parameter_columns={"bundle": "bundle"}, max_report_frequency=30)


def run_phases(spec: SweepSpec, phases: list[Phase], state: SweepState, opts: Options, tracker: Tracker) -> bool:
    """Run (or continue) phases side by side; True when every member they need has ended (False: interrupted)."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    teller = StudyTeller()
    runs = [PhaseRun(spec, phase, state, teller=teller) for phase in phases]
    recorder = None
    pending = _EnvDefault()
    for run in runs:
        run.asha_name = _asha(spec, run.phase, run, state)
    try:
        if all(run.done() for run in runs):
            return True
        if opts.verbose < 3:  # Tune's newer console prints boxes even when silent; its classic one is quiet at 0
            os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
        recorder = MemberRecorder(runs, state, tracker, state["tags"], opts.verbose)
        limit = spec.resources["max_concurrent"] or None
        slots = trial_slots(spec)
        if limit is None:  # with max_concurrent Tune already lets that many trials wait for their actors
            # Tune starts a custom searcher's trials one at a time (one pending trial, ~5 s of actor start each):
            # the main job's second bundle started 5 s after the first, its OTS bundle only when the rerun ended.
            # Read in this process: a Ray client driver (ray://) runs Tune remotely and keeps one pending trial.
            pending.setdefault(PENDING_ENV, str(slots))
        tuner = tune.Tuner(
            _trainable(spec),
            tune_config=tune.TuneConfig(search_alg=BundleSearcher(runs, in_flight=slots + 1), scheduler=FIFOScheduler(),
                                        num_samples=max(1, sum(run.n_bundles() for run in runs)),
                                        max_concurrent_trials=limit, reuse_actors=REUSE_ACTORS),
            run_config=tune.RunConfig(
                name="+".join(p.name for p in phases), storage_path=str(Path(state.folder) / "ray"),
                stop=interrupts.StopOnSignal(), callbacks=[recorder, interrupts.TakeBackSignals()],
                verbose=max(0, opts.verbose - 1), progress_reporter=_progress() if opts.verbose >= 2 else None,
                failure_config=tune.FailureConfig(max_failures=spec.resources["max_failures"]),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
        tuner.fit()
    finally:
        pending.restore()
        if recorder is not None:
            recorder.finish()
        teller.close()  # every tell written before the study is read (best configuration, report)
        state.save()  # with the members' told flags, on every way out
        interrupts.take_back()
        for run in runs:
            if run.asha_actor is not None:
                import ray

                ray.kill(run.asha_actor)
    return all(run.done() for run in runs)
