"""Run and resume sweeps: phases of Ray Tune experiments, logged to MLflow, summarised by the report.

A sweep is a folder: ``spec.yaml`` (the space as given), ``resolved.json`` (what the report reads),
``state.json`` (phases, MLflow ids, options), ``optuna.db`` (the persistent studies), ``ray/<phase>/``
(Tune's experiments and checkpoints), the tracking queue and the report files. Phases, in order, per method:
a searched method runs an Optuna study (``<m>``) and then its best configuration again with the other seeds
(``<m>-best``); a method without a search runs once per seed; a grid runs every combination per seed.

One driver per folder at a time (``driver.lock`` holds its pid; a stale lock is taken over). Ctrl-C (or
SIGUSR1) stops launching, lets Tune checkpoint the running trials, marks the sweep and its runs interrupted
and exits non-zero; ``otsr-sweep resume`` finishes every missing trial. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

from otsr.checkpoint import atomic_write_json
from sweep.space import MethodSpec, SpaceError, SweepSpec, load_space
from sweep.tracking import (
    Tracker,
    TrackingError,
    check_tracking_uri,
    default_artifact_root,
    default_tracking_uri,
    get_or_create_experiment,
    runs_url,
    version_tags,
)
from sweep.trial import PAIR_KEY, run_trial

REUSE_ACTORS = True  # a trial starts in the previous trial's worker: ~0.2 s instead of ~4 s (BRIEF §3)
STATE = "state.json"
SPEC = "spec.yaml"
RESOLVED = "resolved.json"  # what the report needs, so it never rebuilds the pair (data may be elsewhere)
LOCK = "driver.lock"


class SweepInterrupted(Exception):
    """The sweep stopped on a signal; it is resumable."""


class SweepBusy(RuntimeError):
    """Another live driver holds the sweep folder."""


@dataclasses.dataclass
class Options:
    """Where and how a sweep runs (the CLI's options)."""

    address: str | None = None  # None: start Ray in-process; 'auto' or 'ray://host:port': an existing cluster
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite in the working directory
    storage: str = "sweeps"  # parent folder of sweep folders (shared storage on clusters)
    workdir: str = "."  # where the embedded MLflow store lives
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # samples, steps, seeds, cpu, gpu
    num_cpus: int | None = None  # for in-process Ray: CPUs to offer (default: all)
    verbose: int = 1  # 0 silent, 1 one line per trial, 2 Tune's status table, 3 Tune's full output


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


def resolved_spec(spec: SweepSpec) -> dict[str, Any]:
    """The sweep as the report reads it: pair spec, objectives, budget and each method's resolved trainer settings
    (the recipe plus the space's fixed values; searched names listed)."""
    from otsr.pairs import PairSpec
    from otsr.recipes import resolve_config

    pair = PairSpec.from_dict(spec.pair).build()
    methods = {m.method: {"config": resolve_config(pair, {**m.fixed, "method": m.method}).to_dict(),
                          "searched": sorted(m.search) + sorted(m.grid)} for m in spec.methods}
    return {"name": spec.name, "pair": spec.pair, "objectives": [dataclasses.asdict(o) for o in spec.objectives],
            "steps": spec.steps, "seeds": spec.seeds, "scheduler": spec.scheduler, "methods": methods,
            "baselines": baselines(pair, next(iter(methods.values()))["config"]["cost"])}


def baselines(pair, cost: str) -> dict[str, dict[str, float]]:
    """Reference lines of the report: the untrained start (identity, or bicubic for SR) and, for vector pairs with a
    known map, the best affine map."""
    import math

    from otsr.evaluation import evaluate, probe_map
    from otsr.pairs import best_affine_l2_uvp

    out = {"identity": evaluate(probe_map(pair), pair, n=1024, cost=cost, full=False)}
    if pair.has_true_map and math.prod(pair.shape) <= 1024 and pair.shape == pair.shape_q:
        out["best_affine"] = {"l2_uvp": best_affine_l2_uvp(pair, n=1 << 14)}
    return out


def create_sweep(space_file: str | Path, opts: Options) -> Path:
    """Validate the space, resources and tracking URI, then make the sweep folder, experiment and parent run.

    Everything that can be checked is checked before anything is created.
    """
    from sweep.space import check_resources_on_cluster

    spec = load_space(space_file, opts.overrides)
    uri = opts.tracking_uri or default_tracking_uri(Path(opts.workdir))
    check_tracking_uri(uri)
    if opts.address:
        _init_ray(opts)
    check_resources_on_cluster(spec, opts.address, opts.num_cpus)
    storage = Path(opts.storage)
    if storage.exists() and not storage.is_dir():
        raise SpaceError(f"--storage {storage}: is a file, not a folder")
    artifact_root = None if uri.startswith("http") else default_artifact_root(Path(opts.workdir))
    exp_id = get_or_create_experiment(uri, f"otsr/{spec.name}", artifact_root)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    folder = (storage / f"{spec.name}-{stamp}").resolve()
    folder.mkdir(parents=True)
    try:
        shutil.copyfile(space_file, folder / SPEC)
        atomic_write_json(folder / RESOLVED, resolved_spec(spec))
        tags = {**version_tags(), "pair": spec.pair["name"], "otsr.space": spec.name}
        tracker = Tracker(uri, folder, exp_id)
        tracker.create_run("parent", folder.name, {**tags, "otsr.kind": "sweep", "otsr.sweep": folder.name}, {
            "space_file": str(space_file), "pair": json.dumps(spec.pair), "steps": spec.steps, "seeds": spec.seeds,
            "objectives": json.dumps([dataclasses.asdict(o) for o in spec.objectives]),
            "methods": ",".join(m.method for m in spec.methods)})
        tracker.log_artifacts("parent", folder / SPEC)
        state = {"tracking_uri": uri, "experiment_id": exp_id, "tags": tags, "overrides": opts.overrides,
                 "phases": {}, "best": {}, "created": stamp, "status": "created"}
        atomic_write_json(folder / STATE, state)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # nothing half-made stays behind
        raise
    return folder


def load_state(folder: Path) -> dict[str, Any]:
    """The sweep's state file; a clear error when the folder is not a sweep or the file is damaged."""
    path = Path(folder) / STATE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a sweep folder (no {STATE})")
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SpaceError(f"{path}: damaged state file ({e}); the sweep cannot be resumed from it") from None
    for key in ("tracking_uri", "experiment_id", "phases", "best", "overrides"):
        if key not in state:
            raise SpaceError(f"{path}: damaged state file (no {key!r})")
    return state


@contextlib.contextmanager
def driver_lock(folder: Path):
    """One driver per sweep folder: a lock file with the owner's pid; a lock whose process is gone is stale."""
    path = Path(folder) / LOCK
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise SweepBusy(f"{folder} is being run by process {pid} (its {LOCK}); wait for it or stop it "
                                "first") from None
            path.unlink(missing_ok=True)  # stale: its driver died
    else:
        raise SweepBusy(f"{folder}: could not take {LOCK}")
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_sweep(folder: Path, opts: Options) -> dict[str, Any]:
    """Run (or resume) every phase of the sweep in ``folder``, then write the report. Returns the report.

    Raises SweepInterrupted after a signal (the folder is resumable) and SweepBusy when another driver runs it.
    """
    folder = Path(folder).resolve()
    with driver_lock(folder):
        return _run_locked(folder, opts)


def _run_locked(folder: Path, opts: Options) -> dict[str, Any]:
    from sweep.report import write_report

    state = load_state(folder)
    spec = load_space(folder / SPEC, state["overrides"])
    tracker = Tracker(state["tracking_uri"], folder, state["experiment_id"])
    tracker.flush(force=True)  # what an outage left queued goes first
    tracker.set_status("parent", "RUNNING")
    state["status"] = "running"
    atomic_write_json(folder / STATE, state)
    _init_ray(opts)
    try:
        for phase in plan_phases(spec):
            if state["phases"].get(phase.name) in ("done", "skipped"):
                continue
            if _STOP.is_set():
                raise SweepInterrupted(phase.name)
            if phase.kind == "best" and state["best"].get(phase.method.method) is None:
                print(f"otsr-sweep: no {phase.method.method} trial finished; skipping phase {phase.name}", flush=True)
                state["phases"][phase.name] = "skipped"
                continue
            state["phases"][phase.name] = "running"
            atomic_write_json(folder / STATE, state)
            if opts.verbose:
                print(f"phase {phase.name}: {_describe(phase, spec)}", flush=True)
            grid, interrupted = _run_phase(folder, spec, phase, state, opts, tracker)
            if interrupted:
                raise SweepInterrupted(phase.name)
            if phase.kind == "search" and not spec.multi_objective:
                state["best"][phase.method.method] = _best_config(grid, spec)
                if state["best"][phase.method.method]:
                    tracker.log_params("parent", {f"best.{phase.method.method}.{k}": v
                                                  for k, v in state["best"][phase.method.method].items()})
            state["phases"][phase.name] = "done"
            atomic_write_json(folder / STATE, state)
    except (SweepInterrupted, KeyboardInterrupt) as e:
        state["status"] = "interrupted"
        state["phases"] = {k: ("interrupted" if v == "running" else v) for k, v in state["phases"].items()}
        atomic_write_json(folder / STATE, state)
        tracker.set_tags("parent", {"otsr.status": "interrupted"})
        tracker.set_status("parent", "KILLED")
        tracker.drain(attempts=1)
        raise SweepInterrupted(f"sweep {folder.name} interrupted during phase "
                               f"{e.args[0] if isinstance(e, SweepInterrupted) else '?'}; continue it with "
                               f"`otsr-sweep resume {folder}`") from None
    report = write_report(folder)
    for f in ("report.png", "report.html", "report.md", "report.json"):
        if (folder / f).exists():
            tracker.log_artifacts("parent", folder / f, "report")
    tracker.log_metrics("parent", {f"report/{k}": v for k, v in report.get("headline", {}).items()}, step=0)
    tracker.set_tags("parent", {"otsr.status": "finished",
                                "mlflow.note.content": _parent_note(report)})
    tracker.set_status("parent", "FINISHED")
    state["status"] = "finished"
    atomic_write_json(folder / STATE, state)
    if not tracker.drain():
        print(f"otsr-sweep: MLflow at {state['tracking_uri']} did not accept {tracker.pending} write(s) "
              f"({tracker.last_error}); they are kept in {folder}/tracking_queue.jsonl and sent by "
              f"`otsr-sweep resume {folder}`", flush=True)
    if opts.verbose:
        print(f"MLflow runs: {runs_url(state['tracking_uri'], state['experiment_id'])}", flush=True)
    return report


def _parent_note(report: dict[str, Any]) -> str:
    """The parent run's description in the MLflow UI: the report's table."""
    from sweep.report import format_table

    return f"Bias report of {report['sweep']}\n\n{format_table(report)}"


def _describe(phase: Phase, spec: SweepSpec) -> str:
    if phase.kind == "search":
        return f"Optuna search over {', '.join(phase.method.search)} ({phase.method.samples} trials)"
    if phase.kind == "best":
        return f"best {phase.method.method} configuration with seeds 1..{spec.seeds - 1}"
    return f"{phase.method.method} with seeds 0..{spec.seeds - 1}"


def quiet_libraries(verbose: int) -> None:
    """Keep library chatter (MLflow's table creation, Optuna's study notice, Tune's file-sync and TensorBoard
    warnings, Ray's start banner) off the console below verbosity 3: the sweep prints its own lines."""
    import logging

    levels = {"mlflow.store.db.utils": logging.WARNING, "alembic": logging.WARNING, "optuna": logging.WARNING,
              "ray.tune.logger.tensorboardx": logging.ERROR}
    if verbose < 3:
        levels |= {"ray": logging.WARNING, "ray.tune": logging.WARNING}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:
        pass


def _init_ray(opts: Options) -> None:
    import logging

    import ray

    quiet_libraries(opts.verbose)
    level = logging.INFO if opts.verbose >= 3 else logging.WARNING
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # we checkpoint often
    if ray.is_initialized():
        return
    if opts.address:
        ray.init(address=opts.address, log_to_driver=False, logging_level=level)
    else:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keep in-process Ray on loopback
        ray.init(num_cpus=opts.num_cpus, include_dashboard=False, log_to_driver=False, logging_level=level)


def _trainable(spec: SweepSpec):
    from ray import tune

    res = spec.resources
    return tune.with_resources(run_trial, {"cpu": res["cpu"], "gpu": res["gpu"], **res["custom"]})


def _callbacks(folder: Path, spec: SweepSpec, phase: Phase, state: dict[str, Any], opts: Options,
               tracker: Tracker, total: int) -> list:
    from sweep.callbacks import ConsoleReporter, StudyMirror, TrialLogger
    from sweep.studies import open_study

    searched = sorted(phase.method.search) + sorted(phase.method.grid)
    callbacks = [TrialLogger(tracker, phase.name, searched, state["tags"], spec.scheduler["type"])]
    if phase.kind == "search":
        objectives = [dataclasses.asdict(o) for o in spec.objectives]
        name = f"{folder.name}/{phase.name}"
        callbacks.append(StudyMirror(lambda: open_study(folder, name, objectives), phase.method.search, objectives))
    if opts.verbose == 1:
        callbacks.append(ConsoleReporter(phase.name, searched, spec.objectives[0].metric, total))
    return callbacks


def _run_config(folder: Path, spec: SweepSpec, phase: Phase, state: dict[str, Any], opts: Options,
                tracker: Tracker, total: int):
    from ray import tune

    # Tune's newer console prints config and result boxes even when silent: below verbosity 3 use its classic
    # output, which is silent at 0 and our status table (with lambda/lr columns) at 2
    if opts.verbose < 3:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    return tune.RunConfig(
        name=phase.name, storage_path=str(folder / "ray"),
        callbacks=_callbacks(folder, spec, phase, state, opts, tracker, total),
        verbose=max(0, opts.verbose - 1), progress_reporter=_progress(phase) if opts.verbose >= 2 else None,
        failure_config=tune.FailureConfig(max_failures=spec.resources["max_failures"]),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2))


def _progress(phase: Phase):
    from ray.tune import CLIReporter

    cols = {k: k for k in sorted(phase.method.search) + sorted(phase.method.grid)} | {"seed": "seed"}
    return CLIReporter(parameter_columns=cols, metric_columns=["step", "l2_uvp", "psnr", "bias_sliced_w2"],
                       max_report_frequency=30)


def _phase_total(spec: SweepSpec, phase: Phase, state: dict[str, Any]) -> int:
    if phase.kind == "search":
        return phase.method.samples
    seeds = spec.seeds if phase.kind == "seeds" else spec.seeds - 1
    n = 1
    for values in phase.method.grid.values():
        n *= len(values)
    return n * seeds


def _run_phase(folder: Path, spec: SweepSpec, phase: Phase, state: dict[str, Any], opts: Options,
               tracker: Tracker):
    """Run (or continue) one phase; returns (result grid, whether a signal interrupted it)."""
    from ray import tune

    total = _phase_total(spec, phase, state)
    exp_dir = folder / "ray" / phase.name
    if tune.Tuner.can_restore(str(exp_dir)):  # the driver died or was interrupted during this phase: continue it
        tuner = tune.Tuner.restore(str(exp_dir), trainable=_trainable(spec), resume_unfinished=True,
                                   resume_errored=True, param_space=None)
    else:
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
                     **{k: tune.grid_search(v) for k, v in phase.method.grid.items()},
                     "seed": tune.grid_search(seeds)}
            tune_config = tune.TuneConfig(num_samples=1, max_concurrent_trials=limit, metric=single.metric,
                                          mode=single.mode, reuse_actors=REUSE_ACTORS)
        tuner = tune.Tuner(_trainable(spec), param_space=space, tune_config=tune_config,
                           run_config=_run_config(folder, spec, phase, state, opts, tracker, total))
    grid = _fit(tuner)
    unfinished = _unfinished_trials(grid)
    for trial in unfinished:  # cut by the interrupt: resumable, so not FINISHED
        tracker.set_status(trial.trial_id, "KILLED")
    return grid, bool(unfinished) or _STOP.is_set()


def _unfinished_trials(grid) -> list:
    """Trials neither terminated nor errored: the phase was interrupted (Ctrl-C, SIGUSR1)."""
    analysis = getattr(grid, "_experiment_analysis", None)
    trials = getattr(analysis, "trials", None) or []
    return [t for t in trials if t.status not in ("TERMINATED", "ERROR")]


def _search_tune_config(spec: SweepSpec, phase: Phase, limit: int | None):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from sweep.studies import make_sampler

    objs = spec.objectives
    sampler = make_sampler(spec.sampler, phase.method.search)
    if spec.multi_objective:
        searcher = OptunaSearch(space=phase.method.search, metric=[o.metric for o in objs],
                                mode=[o.mode for o in objs], sampler=sampler)
        return tune.TuneConfig(search_alg=searcher, scheduler=FIFOScheduler(), num_samples=phase.method.samples,
                               max_concurrent_trials=limit, reuse_actors=REUSE_ACTORS)
    searcher = OptunaSearch(space=phase.method.search, metric=objs[0].metric, mode=objs[0].mode, sampler=sampler)
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


_STOP = threading.Event()  # a stop signal arrived: no new phase starts
_IN_FIT = threading.Event()  # Tune is running a phase (its SIGUSR1 handler stops it gracefully)


def _on_signal(sig, frame) -> None:
    _STOP.set()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C raises KeyboardInterrupt at once
    if sig == signal.SIGINT and _IN_FIT.is_set():
        os.kill(os.getpid(), signal.SIGUSR1)  # Tune's graceful stop: no new trials, running ones checkpointed


def install_interrupt_handler() -> None:
    """Ctrl-C and SIGUSR1 stop the sweep gracefully (resumable); a second Ctrl-C stops at once.

    Tune keeps SIGUSR1 for its graceful stop while a phase runs; our handler forwards Ctrl-C to it and makes
    sure no further phase starts.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    _STOP.clear()
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGUSR1, _on_signal)


def _fit(tuner):
    """tuner.fit() with the signal bookkeeping around it."""
    _IN_FIT.set()
    try:
        return tuner.fit()
    finally:
        _IN_FIT.clear()
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is _on_signal or _STOP.is_set():
            signal.signal(signal.SIGUSR1, _on_signal)  # Tune left its own SIGUSR1 handler behind


__all__ = ["Options", "SweepBusy", "SweepInterrupted", "TrackingError", "create_sweep", "install_interrupt_handler",
           "load_state", "plan_phases", "run_sweep"]
