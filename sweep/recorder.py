"""The driver's record of every member configuration: its state entry, its MLflow run, its Optuna trial and its
console line, kept up to date from the trials' reports (a Tune callback on the driver; it never raises into
Tune: a tracking or study write that fails is queued or reported, and the trials keep training).

It runs on Tune's event loop, so it only does quick things there: MLflow writes are appended to the tracking
queue, whose drainer thread sends them; Optuna writes go to the phases' study teller thread; the state file is a
local file. A member's Optuna trial is told once its MLflow run exists (its run id is one of the trial's
attributes), at the latest when the phases end.

Each metric point is logged once: a resumed member re-runs the steps after its last checkpoint, and points at
steps already logged are skipped, so a resumed sweep holds no duplicates.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from sweep.folder import SweepState
from sweep.records import MemberReport, MemberStatus
from sweep.searcher import PhaseRun
from sweep.tracking import (
    COLOR_TAG,
    MEMBER_TAG,
    OUTCOME_TAG,
    PHASE_TAG,
    ROLE_TAG,
    Tracker,
    knob_metrics,
    knob_ranges,
    member_run_name,
    reference_positions,
    run_color,
    run_params,
)


class MemberRecorder(Callback):
    """See the module docstring."""

    def __init__(self, runs: list[PhaseRun], state: SweepState, tracker: Tracker, tags: dict[str, str],
                 verbose: int):
        self.runs = {r.phase.name: r for r in runs}
        self.state, self.tracker, self.tags, self.verbose = state, tracker, tags, verbose
        self.ended = {name: sum(m.ended for m in state.members(name).values()) for name in self.runs}
        self.untold: list[str] = []  # ended members whose MLflow run is still being created

    def _run(self, key: str) -> PhaseRun:
        return self.runs[self.state.member(key).phase]

    def __getstate__(self):  # Tune pickles callbacks into its own (never re-read) experiment files
        return {}

    def get_state(self):
        """Nothing for Tune to keep."""
        return None

    # --- Tune hooks ---

    def on_step_begin(self, iteration, trials, **info):
        """Wake the tracking drainer; tell Optuna about members whose runs now exist."""
        self.tracker.flush()
        if self.untold:
            self._tell_waiting()
            self.state.save()

    def finish(self) -> None:
        """The phases ended: give the queue a moment to create the last runs, then tell every member left."""
        if self.untold:
            self.tracker.wait_idle(10.0)
            self._tell_waiting(final=True)
            self.state.save()

    def on_trial_start(self, iteration, trials, trial, **info):
        """Open (or find again, and mark RUNNING) each member's run."""
        for m in trial.config.get("members", []):
            self._ensure_run(m["key"])
            rec = self.state.member(m["key"])
            if not rec.ended:
                rec.status = MemberStatus.RUNNING
                self.tracker.set_status(m["key"], "RUNNING")
        self.state.save()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """Log each member's new points; end the members that ended; at the trial's last report, upload each
        member's run folder (complete by then, stopped members' too)."""
        try:
            for key, entry in (result.get("members") or {}).items():
                self._record(key, MemberReport.from_json(entry), result)
            if result.get("final"):
                for key in result.get("members") or {}:
                    self._upload(key)
            self.state.save()
        except Exception as e:  # the record is bookkeeping: never stop the sweep over it
            print(f"otsr-sweep: could not record a result of trial {trial.trial_id}: {type(e).__name__}: {e}",
                  file=sys.stderr)

    def on_trial_error(self, iteration, trials, trial, **info):
        """The trial failed after its retries: its members that had not ended end as errors, with the reason."""
        reason = trial_error(trial)
        for m in trial.config.get("members", []):
            if not self.state.member(m["key"]).ended:
                self._end(m["key"], MemberStatus.ERROR, reason)
            self._upload(m["key"])
        self.state.save()

    def _upload(self, key: str) -> None:
        """The member's run folder as the run's ``run/`` artifacts (once)."""
        rec, folder = self.state.member(key), self.state.member_dir(key)
        if rec.ended and not rec.uploaded and folder.is_dir():
            self._ensure_run(key)
            self.tracker.log_artifacts(key, folder, "run")
            rec.uploaded = True

    # --- members ---

    def _ensure_run(self, key: str) -> None:
        if self.tracker.has_run(key):
            return
        rec, run = self.state.member(key), self._run(key)
        settings = {**run.base_settings(), **rec.settings}
        tags = {**self.tags, MEMBER_TAG: key, PHASE_TAG: run.phase.name, ROLE_TAG: rec.role,
                "method": str(settings.get("method")), "seed": str(settings.get("seed", 0)),
                "otsr.bundle": self._bundle_of(key), COLOR_TAG: run_color(settings, rec.role, knob_ranges(run.spec))}
        self.tracker.create_run(key, member_run_name(settings, run.phase.searched), tags,
                                run_params(settings, run.spec.pair, reference_positions(run.spec)), parent="parent")
        self.tracker.log_metrics(key, knob_metrics(settings), 0)

    def _bundle_of(self, key: str) -> str:
        return next((b for b, keys in self._run(key).record["bundles"].items() if key in keys), "")

    def _record(self, key: str, entry: MemberReport, result: dict[str, Any]) -> None:
        rec = self.state.member(key)
        if rec.ended:
            return
        self._ensure_run(key)
        rows = []
        for h in entry.train:
            s = int(h["step"])
            if s > rec.logged_train:
                ts = int(h.get("time", time.time()) * 1000)
                rows += [[f"train/{k}", float(v), ts, s] for k, v in h.items() if k.startswith("loss_")]
        if rows:
            self.tracker.log_metric_rows(key, rows)
            rec.logged_train = max(r[3] for r in rows)
        spec = self._run(key).spec
        objective, also = spec.objectives[0].metric, spec.scheduler["also_rank_by"]
        for ev in sorted(entry.evals, key=lambda e: e.get("step", 0)):
            s = int(ev.get("step", 0))
            finite = _finite(ev)
            if finite and s > rec.logged_eval:
                self.tracker.log_metrics(key, {f"eval/{k}": v for k, v in finite.items()}, s)
                rec.logged_eval = s
            if objective in finite:
                rec.objective[str(s)] = finite[objective]
                if also:  # what a resumed driver's rung actor replays
                    rec.ranks[str(s)] = {m: finite[m] for m in also if m in finite}
        metrics = _finite(entry.metrics)
        if metrics:
            rec.metrics = metrics
        rec.step = entry.step
        rec.node_id = result.get("node_id", rec.node_id)
        if result.get("resumed_from") and not rec.resumed_from:
            rec.resumed_from = int(result["resumed_from"])
            self.tracker.set_tags(key, {"otsr.resumed_from": rec.resumed_from})
        if entry.status.ended:
            self._end(key, entry.status, entry.message, node=result.get("node_id", ""))

    def _end(self, key: str, status: MemberStatus, reason: str = "", node: str = "") -> None:
        rec = self.state.member(key)
        rec.status, rec.reason = status, reason or ""
        tags = {OUTCOME_TAG: status.outcome, "otsr.node_id": node}
        if status is MemberStatus.STOPPED:
            tags["otsr.stopped_early"] = f"at step {rec.step}"
            run = self._run(key)
            settings = {**run.base_settings(), **rec.settings}
            self.tracker.rename(key, f"{member_run_name(settings, run.phase.searched)} (stopped @{rec.step})")
        if reason and status.failed:
            tags["otsr.reason"] = reason[:5000]
        self.tracker.set_tags(key, tags)
        self.tracker.set_status(key, status.mlflow_status)
        self.untold.append(key)
        self._tell_waiting()
        self.ended[rec.phase] += 1
        if self.verbose == 1:
            self._line(key, status, reason)

    def _tell_waiting(self, final: bool = False) -> None:
        """Tell the study about ended members whose MLflow run id is known (all of them when ``final``)."""
        ids = self.tracker.run_ids()
        for key in list(self.untold):
            if key not in ids and not final:
                continue
            self.untold.remove(key)
            self.state.member(key).run_id = ids.get(key, "")
            try:
                self._run(key).tell_later(key)
            except Exception as e:  # the study is a record; a failure to write it never stops the sweep
                print(f"otsr-sweep: could not record {key} in the Optuna study: {e}", file=sys.stderr)

    def _line(self, key: str, status: MemberStatus, reason: str) -> None:
        rec, run = self.state.member(key), self._run(key)
        objective = run.spec.objectives[0].metric
        value = rec.metrics.get(objective)
        shown = f"{value:.4g}" if isinstance(value, (int, float)) and math.isfinite(value) else "–"
        settings = {**run.base_settings(), **rec.settings}
        name = member_run_name(settings, run.phase.searched)
        text = {MemberStatus.COMPLETED: "done", MemberStatus.STOPPED: f"stopped early at step {rec.step}",
                MemberStatus.DIVERGED: f"diverged: {reason}", MemberStatus.ERROR: f"error: {reason[:120]}"}[status]
        print(f"  [{run.phase.name} {self.ended[run.phase.name]}/{run.total()}] {name:<36} {objective}={shown:<10} "
              f"{text}", flush=True)


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    """Evaluation metrics worth logging: finite numbers, no step and no loss readouts."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v) and k != "step" and not k.startswith("loss_")}


def trial_error(trial) -> str:
    """The last line of an errored trial's exception (e.g. 'RuntimeError: trial asked for a GPU ...')."""
    texts = []
    try:
        err = trial.get_error()  # Tune's text form (its pickled form is never loaded)
    except Exception:  # storage not synced yet: try the file
        err = None
    if err:
        texts.append(str(err))
    if trial.error_file and Path(trial.error_file).is_file():
        texts.append(Path(trial.error_file).read_text())
    for text in texts:
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        if lines:
            return lines[-1]
    return "error (no message recorded)"
