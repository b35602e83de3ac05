"""Run and resume sweeps: create the folder, run the phases in order, choose the best configuration of each
search, write the report, and keep MLflow and ``state.json`` telling the truth at every stop.

One driver per folder (``sweep.lock``). A stop signal (``sweep.interrupts``) at any stage ends the sweep as
interrupted (its parent run and its unfinished member runs KILLED, the state saying what is missing) with exit
code 128 + the signal; ``otsr-sweep resume`` finishes it from otsr's own state and the members' checkpoints.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from otsr.metric_registry import Headline
from sweep import interrupts, ray_session
from sweep.folder import RESOLVED, SPEC, SweepState
from sweep.lock import SweepBusy, driver_lock
from sweep.mlflow_views import view_tags, view_urls
from sweep.phases import Options, describe, run_phases, trial_slots
from sweep.records import MemberStatus
from sweep.searcher import Phase, plan_groups, plan_phases
from sweep.space import SpaceError, SweepSpec, check_resources_on_cluster, load_space
from sweep.tracking import (
    BEST_COLOR,
    COLOR_TAG,
    ROLE_TAG,
    Tracker,
    TrackingError,
    check_tracking_uri,
    default_artifact_root,
    default_tracking_uri,
    get_or_create_experiment,
    reference_positions,
    server_answers,
    ui_base,
    version_tags,
)


class SweepInterrupted(Exception):
    """The sweep stopped on a signal; it is resumable. ``code`` is the exit code to use."""

    def __init__(self, message: str, code: int = 130):
        super().__init__(message)
        self.code = code


def resolved_spec(spec: SweepSpec) -> dict[str, Any]:
    """The sweep as the report reads it: pair spec, objectives, budget, each method's resolved trainer settings
    (the recipe plus the space's fixed values; searched names listed), the pair's headline metrics and the
    reference lines."""
    from otsr.baselines import baselines
    from otsr.pairs import PairSpec
    from otsr.recipes import resolve_config

    pair = PairSpec.from_dict(spec.pair).build()
    methods = {m.method: {"config": resolve_config(pair, {**m.fixed, "method": m.method}).to_dict(),
                          "searched": sorted(m.search) + sorted(m.grid), "bundle": m.bundle} for m in spec.methods}
    first = next(iter(methods.values()))["config"]
    return {"name": spec.name, "pair": spec.pair, "objectives": [dataclasses.asdict(o) for o in spec.objectives],
            "steps": spec.steps, "seeds": spec.seeds, "scheduler": spec.scheduler, "methods": methods,
            "headline": pair.headline().to_dict(),
            "baselines": baselines(pair, first["cost"], n=min(first["final_eval_samples"], 1 << 14))}


def create_sweep(space_file: str | Path, opts: Options, alongside: Callable[[], None] | None = None) -> Path:
    """Validate the space, resources and tracking URI, then make the sweep folder, experiment and parent run.

    Everything that can be checked is checked before anything is created. ``alongside`` runs on this thread
    while the making runs on another (``otsr-sweep run`` starts in-process Ray there: MLflow's store creation and
    Ray's start each take seconds, and neither waits on the other).
    """
    spec = load_space(space_file, opts.overrides)
    storage = Path(opts.storage)
    for parent in (storage, *storage.parents):
        if parent.exists() and not parent.is_dir():
            raise SpaceError(f"--storage {storage}: {parent} is a file, not a folder")
    uri = opts.tracking_uri or default_tracking_uri(Path(opts.workdir))
    check_tracking_uri(uri)
    if opts.address:
        ray_session.start(opts.address, None, opts.verbose)
    check_resources_on_cluster(spec, opts.address, opts.num_cpus)
    resolved = resolved_spec(spec)  # builds the pair: a broken user pair fails here, before anything exists
    if alongside is None:
        return _make_sweep(space_file, spec, resolved, storage, uri, opts)
    return _beside(lambda: _make_sweep(space_file, spec, resolved, storage, uri, opts), alongside,
                   undo=lambda folder: shutil.rmtree(folder, ignore_errors=True))  # nothing half-made stays


def _beside(work: Callable[[], Any], here: Callable[[], None], undo: Callable[[Any], None] | None = None) -> Any:
    """Run ``work`` on a worker thread while ``here`` runs on this one; return ``work``'s result (its error is
    raised here). If either fails, or a signal's KeyboardInterrupt arrives meanwhile, ``work`` is still waited for,
    ``undo`` gets its result, and the first failure goes on (the other one added to it as a note)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = work()
        except BaseException as e:  # re-raised on the calling thread
            out["error"] = e

    worker = threading.Thread(target=run, name="otsr-beside")
    worker.start()
    failure: BaseException | None = None
    try:
        here()
    except BaseException as e:
        failure = e
    while worker.is_alive():  # a second signal while waiting must not leave the work unfinished and unseen
        try:
            worker.join()
        except BaseException as e:
            failure = failure or e
    if failure is None and "error" in out:
        failure = out["error"]
    elif failure is not None and "error" in out:
        failure.add_note(f"meanwhile, on the worker thread: {type(out['error']).__name__}: {out['error']}")
    if failure is not None:
        if undo is not None and "result" in out:
            undo(out["result"])
        raise failure
    return out["result"]


def _stop_ray_quietly() -> None:
    """Shut Ray down once the phases are done; a failure there is reported, not turned into a failed sweep whose
    results are all in (``run_sweep`` tries again on its way out)."""
    try:
        ray_session.stop()
    except Exception as e:  # noqa: BLE001 - the sweep's results do not depend on it
        print(f"otsr-sweep: Ray did not shut down cleanly ({type(e).__name__}: {e})", file=sys.stderr, flush=True)


def _make_sweep(space_file: str | Path, spec: SweepSpec, resolved: dict[str, Any], storage: Path, uri: str,
                opts: Options) -> Path:
    """Make the validated sweep's experiment, folder, parent run and state (the folder is removed on failure)."""
    artifact_root = None if uri.startswith("http") else default_artifact_root(Path(opts.workdir))
    exp_id = get_or_create_experiment(uri, f"otsr/{spec.name}", artifact_root)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    folder = (storage / f"{spec.name}-{stamp}").resolve()
    folder.mkdir(parents=True)
    try:
        shutil.copyfile(space_file, folder / SPEC)
        (folder / RESOLVED).write_text(json.dumps(resolved, indent=2, sort_keys=True))
        tags = {**version_tags(), "pair": spec.pair["name"], "otsr.space": spec.name}
        tracker = Tracker(uri, folder, exp_id)
        tracker.set_experiment_tags(view_tags(spec.objectives[0].metric, Headline.from_dict(resolved["headline"]),
                                              [m.method for m in spec.methods], reference_positions(spec)))
        tracker.create_run("parent", folder.name, {**tags, "otsr.kind": "sweep", "otsr.sweep": folder.name,
                                                    ROLE_TAG: "sweep"}, {
            "space_file": str(space_file), "pair": json.dumps(spec.pair), "steps": spec.steps, "seeds": spec.seeds,
            "objectives": json.dumps([dataclasses.asdict(o) for o in spec.objectives]),
            "methods": ",".join(m.method for m in spec.methods)})
        tracker.log_artifacts("parent", folder / SPEC)
        SweepState.create(folder, tracking_uri=uri, experiment_id=exp_id, tags=tags, overrides=opts.overrides,
                          created=stamp)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # nothing half-made stays behind
        raise
    return folder


def run_sweep(folder: Path, opts: Options) -> dict[str, Any]:
    """Run (or resume) every phase of the sweep in ``folder``, then write the report. Returns the report.

    Raises SweepInterrupted after a signal (the folder is resumable) and SweepBusy when another driver runs it.
    """
    folder = Path(folder).resolve()
    with driver_lock(folder):
        try:
            return _run_locked(folder, opts)
        finally:
            ray_session.stop()


def _run_locked(folder: Path, opts: Options) -> dict[str, Any]:
    from sweep.report import write_report

    state = SweepState.load(folder)
    spec = load_space(folder / SPEC, state["overrides"])
    tracker = Tracker(state["tracking_uri"], folder, state["experiment_id"])
    tracker.flush(force=True)  # what an outage left queued goes first
    tracker.start()  # from here one thread sends every MLflow write; Tune's callbacks only append
    tracker.set_status("parent", "RUNNING")
    state["status"] = "running"
    state.save()
    try:
        ray_session.start(opts.address, opts.num_cpus, opts.verbose)
        for group in plan_groups(spec, trial_slots(spec)):
            todo = []
            for phase in group:
                if state.phase(phase.name)["status"] in ("done", "skipped"):
                    continue
                if phase.kind == "best" and state["best"].get(phase.method.method) is None:
                    print(f"otsr-sweep: no {phase.method.method} configuration finished; skipping phase "
                          f"{phase.name}", flush=True)
                    state.phase(phase.name)["status"] = "skipped"
                    continue
                todo.append(phase)
            if not todo:
                continue
            _check_stop(todo[0].name)
            for phase in todo:
                state.phase(phase.name)["status"] = "running"
                if opts.verbose:
                    print(f"phase {phase.name}: {describe(phase, spec)}", flush=True)
            state.save()
            if not run_phases(spec, todo, state, opts, tracker):
                raise _interrupted(todo[0].name)
            for phase in todo:
                if phase.kind == "search" and not spec.multi_objective:
                    _choose_best(spec, phase, state, tracker)
                state.phase(phase.name)["status"] = "done"
            state.save()
        _check_stop("report")
        # no phase needs Ray any more: it shuts down (about a second) while the report is drawn (about as long)
        report = _beside(lambda: write_report(folder), _stop_ray_quietly)
        _check_stop("report")
        _finish(folder, state, tracker, report, opts)
    except (SweepInterrupted, KeyboardInterrupt) as e:
        stage = e.args[0] if isinstance(e, SweepInterrupted) else "?"
        _mark_stopped(state, tracker)
        raise _resumable(folder, stage) from None
    except Exception as e:
        if interrupts.STOP.is_set():  # a library failing while it stops after a signal: still an interruption
            _mark_stopped(state, tracker)
            raise _resumable(folder, "?") from e
        try:  # any other error (Ray did not start, a full disk, ...): the sweep ends 'failed', not 'running'
            _mark_stopped(state, tracker, failed=f"{type(e).__name__}: {e}"[:500])
        except Exception as mark_error:
            print(f"otsr-sweep: could not mark the sweep failed ({mark_error})", file=sys.stderr, flush=True)
        raise
    return report


def _resumable(folder: Path, stage: str) -> SweepInterrupted:
    return SweepInterrupted(f"sweep {folder.name} interrupted ({interrupts.signal_name()}) during "
                            f"{str(stage).split(' ')[0]}; continue it with `otsr-sweep resume {folder}`",
                            interrupts.exit_code())


def _check_stop(stage: str) -> None:
    if interrupts.STOP.is_set():
        raise _interrupted(stage)


def _interrupted(stage: str) -> SweepInterrupted:
    return SweepInterrupted(stage, interrupts.exit_code())


def _mark_stopped(state: SweepState, tracker: Tracker, failed: str = "") -> None:
    """The truth after a stop: unfinished phases and members interrupted, their runs and the parent KILLED (FAILED,
    with the reason in ``otsr.status``, when an unexpected error stopped the driver)."""
    state["status"] = "failed" if failed else "interrupted"
    for rec in state["phases"].values():
        if rec["status"] == "running":
            rec["status"] = "interrupted"
    for key, m in state.members().items():
        if not m.ended and m.status is not MemberStatus.PENDING:
            m.status = MemberStatus.INTERRUPTED
            if tracker.has_run(key):
                tracker.set_tags(key, {"otsr.outcome": m.status.outcome})
                tracker.set_status(key, m.status.mlflow_status)
    state.save()
    tracker.set_tags("parent", {"otsr.status": f"failed: {failed}" if failed else "interrupted"})
    tracker.set_status("parent", "FAILED" if failed else "KILLED")
    tracker.drain(attempts=1)


def _choose_best(spec: SweepSpec, phase: Phase, state: SweepState, tracker: Tracker) -> None:
    """The searched values of the best member that ran to the end (stopped early ones do not qualify)."""
    obj = spec.objectives[0]
    done = {k: m for k, m in state.members(phase.name).items()
            if m.status is MemberStatus.COMPLETED and math.isfinite(m.metrics.get(obj.metric, math.nan))}
    if not done:
        state["best"][phase.method.method] = None
        return
    sign = 1 if obj.mode == "min" else -1
    key = min(done, key=lambda k: sign * done[k]["metrics"][obj.metric])
    best = {k: done[key].settings[k] for k in phase.method.search}
    state["best"][phase.method.method] = best
    state["best_member"] = {**state.get("best_member", {}), phase.method.method: key}
    tracker.log_params("parent", {f"best.{phase.method.method}.{k}": v for k, v in best.items()})
    state.member(key).role = "best"  # with the best phase's reruns: "group by role" gives best-lambda over seeds
    tracker.set_tags(key, {ROLE_TAG: "best", COLOR_TAG: BEST_COLOR, "otsr.chosen": f"best {obj.metric} of the search"})


def _finish(folder: Path, state: SweepState, tracker: Tracker, report: dict[str, Any], opts: Options) -> None:
    from sweep.report import comparison_table, parent_metrics, parent_note, relative_metrics

    for f in ("report.png", "report.html", "report.md", "report.json"):
        if (folder / f).exists():
            tracker.log_artifacts("parent", folder / f, "report")
    tracker.log_table("parent", comparison_table(report), "comparison.json")
    tracker.log_metrics("parent", parent_metrics(report), 0)
    for key, (step, values) in relative_metrics(report).items():  # the references have finished: ÷ their mean
        if tracker.has_run(key):
            tracker.log_metrics(key, values, step)
    tracker.set_note("parent", parent_note(report))
    tracker.set_tags("parent", {"otsr.status": "finished"})
    tracker.set_status("parent", "FINISHED")
    state["status"] = "finished"
    state.save()
    if not tracker.drain():
        print(f"otsr-sweep: MLflow at {state['tracking_uri']} did not accept {tracker.pending} write(s) "
              f"({tracker.last_error}); they are kept in {folder}/tracking_queue.jsonl and sent by "
              f"`otsr-sweep resume {folder}`", flush=True)
    base = ui_base(state["tracking_uri"])
    if opts.verbose:
        if base and server_answers(base):
            print(f"MLflow runs: {view_urls(base, state['experiment_id'])['otsr-compare']}", flush=True)
        elif base is None:
            print("MLflow runs: `otsr-sweep ui` serves them and prints the addresses of the two saved views "
                  "(compare, lambda charts)", flush=True)


__all__ = ["Options", "SweepBusy", "SweepInterrupted", "TrackingError", "create_sweep", "plan_phases",
           "run_sweep"]
