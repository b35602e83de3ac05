"""Run and resume sweeps: phases of Ray Tune experiments, logged to MLflow, summarised by the report.

A sweep is a folder: ``spec.yaml`` (the space as given), ``state.json`` (phases, MLflow ids, options),
``ray/<phase>/`` (Tune's experiments and checkpoints) and the report files. Phases, in order, per method:
a searched method runs an Optuna study (``<m>``) and then its best configuration again with the other seeds
(``<m>-best``); a method without a search runs once per seed; a grid runs every combination per seed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
from pathlib import Path
from typing import Any

from otsr.checkpoint import atomic_write_json
from sweep.space import MethodSpec, SweepSpec, load_space
from sweep.tracking import (
    MlflowClient,
    TrialLogger,
    check_tracking_uri,
    code_version,
    default_artifact_root,
    default_tracking_uri,
    find_run,
    get_or_create_experiment,
    start_parent_run,
)
from sweep.trial import PAIR_KEY, run_trial

REUSE_ACTORS = True  # a trial starts in the previous trial's worker: ~0.2 s instead of ~4 s (BRIEF §3)
STATE = "state.json"
SPEC = "spec.yaml"


@dataclasses.dataclass
class Options:
    """Where and how a sweep runs (the CLI's options)."""

    address: str | None = None  # None: start Ray in-process; 'auto' or 'ray://host:port': an existing cluster
    tracking_uri: str | None = None  # None: sqlite in the working directory
    storage: str = "sweeps"  # parent folder of sweep folders (shared storage on clusters)
    workdir: str = "."  # where the embedded MLflow store lives
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # samples, steps, seeds, cpu, gpu
    num_cpus: int | None = None  # for in-process Ray: CPUs to offer (default: all)
    verbose: int = 1  # Tune's console progress (0 silent, 1 status table)


@dataclasses.dataclass(frozen=True)
class Phase:
    """One Tune experiment of the sweep."""

    name: str
    method: MethodSpec
    kind: str  # 'search', 'seeds' (the fixed config per seed) or 'best' (best searched config, other seeds)


def plan_phases(spec: SweepSpec) -> list[Phase]:
    """The experiments a sweep runs, in order."""
    phases = []
    for m in spec.methods:
        if m.search:
            phases.append(Phase(m.method, m, "search"))
            if spec.seeds > 1 and not spec.multi_objective:
                phases.append(Phase(f"{m.method}-best", m, "best"))
        else:
            phases.append(Phase(m.method, m, "seeds"))
    return phases


def create_sweep(space_file: str | Path, opts: Options) -> Path:
    """Validate the space and the tracking URI, make the sweep folder, the MLflow experiment and parent run."""
    spec = load_space(space_file, opts.overrides)
    uri = opts.tracking_uri or default_tracking_uri(Path(opts.workdir))
    check_tracking_uri(uri)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    folder = (Path(opts.storage) / f"{spec.name}-{stamp}").resolve()
    folder.mkdir(parents=True)
    shutil.copyfile(space_file, folder / SPEC)
    artifact_root = None if uri.startswith("http") else default_artifact_root(Path(opts.workdir))
    client = MlflowClient(uri)
    exp_id = get_or_create_experiment(client, f"otsr/{folder.name}", artifact_root)
    tags = {"otsr.code_version": code_version(), "pair": spec.pair["name"]}
    parent = start_parent_run(client, exp_id, folder.name, tags, {
        "space_file": str(space_file), "pair": json.dumps(spec.pair), "steps": spec.steps, "seeds": spec.seeds,
        "objectives": json.dumps([dataclasses.asdict(o) for o in spec.objectives]),
        "methods": ",".join(m.method for m in spec.methods)})
    client.log_artifact(parent, str(folder / SPEC))
    state = {"tracking_uri": uri, "experiment_id": exp_id, "parent_run_id": parent, "tags": tags,
             "overrides": opts.overrides, "phases": {}, "best": {}, "created": stamp}
    atomic_write_json(folder / STATE, state)
    return folder


def load_state(folder: Path) -> dict[str, Any]:
    """The sweep's state file; a clear error when the folder is not a sweep."""
    path = Path(folder) / STATE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a sweep folder (no {STATE})")
    return json.loads(path.read_text())


def run_sweep(folder: Path, opts: Options) -> dict[str, Any]:
    """Run (or resume) every phase of the sweep in ``folder``, then write the report. Returns the report."""
    from sweep.report import write_report

    folder = Path(folder).resolve()
    state = load_state(folder)
    spec = load_space(folder / SPEC, state["overrides"])
    check_tracking_uri(state["tracking_uri"])
    _init_ray(opts)
    for phase in plan_phases(spec):
        if state["phases"].get(phase.name) == "done":
            continue
        if phase.kind == "best" and state["best"].get(phase.method.method) is None:
            print(f"otsr-sweep: no {phase.method.method} trial finished; skipping phase {phase.name}", flush=True)
            state["phases"][phase.name] = "skipped"
            continue
        state["phases"][phase.name] = "running"
        atomic_write_json(folder / STATE, state)
        grid = _run_phase(folder, spec, phase, state, opts)
        _reconcile(grid, state, phase)
        if phase.kind == "search" and not spec.multi_objective:
            state["best"][phase.method.method] = _best_config(grid, spec)
        state["phases"][phase.name] = "done"
        atomic_write_json(folder / STATE, state)
    report = write_report(folder)
    client = MlflowClient(state["tracking_uri"])
    for f in ("report.png", "report.html", "report.md", "report.json"):
        if (folder / f).exists():
            client.log_artifact(state["parent_run_id"], str(folder / f), artifact_path="report")
    for key, value in report.get("headline", {}).items():
        client.log_metric(state["parent_run_id"], key, value)
    client.set_terminated(state["parent_run_id"], status="FINISHED")
    return report


def _init_ray(opts: Options) -> None:
    import ray

    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # we checkpoint often
    if ray.is_initialized():
        return
    if opts.address:
        ray.init(address=opts.address, log_to_driver=False)
    else:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep in-process Ray on loopback
        ray.init(num_cpus=opts.num_cpus, include_dashboard=False, log_to_driver=False)


def _trainable(spec: SweepSpec):
    from ray import tune

    res = spec.resources
    return tune.with_resources(run_trial, {"cpu": res["cpu"], "gpu": res["gpu"], **res["custom"]})


def _run_config(folder: Path, spec: SweepSpec, phase: Phase, state: dict[str, Any], opts: Options):
    from ray import tune

    logger = TrialLogger(state["tracking_uri"], state["experiment_id"], state["parent_run_id"], phase.name,
                         state["tags"])
    return tune.RunConfig(
        name=phase.name, storage_path=str(folder / "ray"), callbacks=[logger], verbose=opts.verbose,
        failure_config=tune.FailureConfig(max_failures=spec.resources["max_failures"]),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2))


def _run_phase(folder: Path, spec: SweepSpec, phase: Phase, state: dict[str, Any], opts: Options):
    from ray import tune

    exp_dir = folder / "ray" / phase.name
    if tune.Tuner.can_restore(str(exp_dir)):  # the driver died during this phase: continue it
        tuner = tune.Tuner.restore(str(exp_dir), trainable=_trainable(spec), resume_unfinished=True,
                                   resume_errored=True)
        return tuner.fit()
    base = {**phase.method.fixed, "method": phase.method.method, "steps": spec.steps,
            "eval_every": spec.eval_every, PAIR_KEY: spec.pair, "seed": 0}
    single = spec.objectives[0]
    limit = spec.resources["max_concurrent"] or None
    if phase.kind == "search":
        tune_config = _search_tune_config(spec, phase, limit)
        space = base
    else:
        seeds = list(range(spec.seeds)) if phase.kind == "seeds" else list(range(1, spec.seeds))
        space = {**base, **(state["best"][phase.method.method] if phase.kind == "best" else {}),
                 **{k: tune.grid_search(v) for k, v in phase.method.grid.items()}, "seed": tune.grid_search(seeds)}
        tune_config = tune.TuneConfig(num_samples=1, max_concurrent_trials=limit, metric=single.metric,
                                      mode=single.mode, reuse_actors=REUSE_ACTORS)
    tuner = tune.Tuner(_trainable(spec), param_space=space, tune_config=tune_config,
                       run_config=_run_config(folder, spec, phase, state, opts))
    return tuner.fit()


def _search_tune_config(spec: SweepSpec, phase: Phase, limit: int | None):
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    objs = spec.objectives
    if spec.multi_objective:
        searcher = OptunaSearch(space=phase.method.search, metric=[o.metric for o in objs],
                                mode=[o.mode for o in objs], sampler=optuna.samplers.NSGAIISampler(seed=0))
        return tune.TuneConfig(search_alg=searcher, scheduler=FIFOScheduler(), num_samples=phase.method.samples,
                               max_concurrent_trials=limit, reuse_actors=REUSE_ACTORS)
    searcher = OptunaSearch(space=phase.method.search, metric=objs[0].metric, mode=objs[0].mode,
                            sampler=optuna.samplers.TPESampler(seed=0))
    sched = spec.scheduler
    scheduler = (ASHAScheduler(time_attr="step", max_t=spec.steps, grace_period=min(sched["grace_period"], spec.steps),
                               reduction_factor=sched["reduction_factor"])
                 if sched["type"] == "asha" else FIFOScheduler())
    return tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=phase.method.samples,
                           max_concurrent_trials=limit, metric=objs[0].metric, mode=objs[0].mode,
                           reuse_actors=REUSE_ACTORS)


def _best_config(grid, spec: SweepSpec) -> dict[str, Any] | None:
    """Searched values of the best trial that ran to the end (ASHA-stopped trials do not qualify)."""
    obj = spec.objectives[0]
    done = [r for r in grid if r.metrics and r.metrics.get("final") and not r.metrics.get("diverged")
            and r.metrics.get(obj.metric) is not None]
    if not done:  # every trial diverged or was stopped: nothing to confirm with other seeds
        return None
    sign = 1 if obj.mode == "min" else -1
    best = min(done, key=lambda r: sign * r.metrics[obj.metric])
    method = next(m for m in spec.methods if m.method == best.config["method"])
    return {k: best.config[k] for k in method.search}


def _reconcile(grid, state: dict[str, Any], phase: Phase) -> None:
    """Make sure every trial of the phase has exactly one terminated MLflow run (after driver restarts)."""
    client = MlflowClient(state["tracking_uri"])
    for r in grid:
        tid = (r.metrics or {}).get("trial_id")
        if tid is None:
            continue
        run = find_run(client, state["experiment_id"], "otsr.trial_id", tid)
        if run is not None and run.info.status == "RUNNING":
            failed = r.error is not None or bool((r.metrics or {}).get("diverged"))
            client.set_terminated(run.info.run_id, status="FAILED" if failed else "FINISHED")
