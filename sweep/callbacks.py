"""Tune callbacks of a sweep: MLflow runs per trial, the persistent Optuna study, and a readable console.

They run on the driver and never raise into Tune: a tracking or study write that fails is queued or reported,
and the trials keep training.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from sweep.tracking import PHASE_TAG, TRIAL_TAG, Tracker, flat_params, trial_run_name

# Result fields that are Tune's or otsr's bookkeeping, not metrics: they go to tags or nowhere.
BOOKKEEPING = {"step", "final", "diverged", "node_id", "resumed_from", "trial_id", "timestamp", "time_this_iter_s",
               "time_total_s", "time_since_restore", "iterations_since_restore", "training_iteration", "pid",
               "done", "date", "hostname", "node_ip", "checkpoint_dir_name", "should_checkpoint", "reason",
               "train_history"}  # and the loss_* readouts, which go to train/*


def eval_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The evaluation metrics of a Tune result (numeric, finite, not bookkeeping), prefixed ``eval/``."""
    return {f"eval/{k}": float(v) for k, v in result.items()
            if k not in BOOKKEEPING and not k.startswith("loss_") and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


class TrialLogger(Callback):
    """One nested MLflow run per trial under the sweep's parent run, written through the sweep's ``Tracker``.

    Finished trials get their last checkpoint's files (map PNG, curves, checkpoint, metrics) as artifacts;
    diverged and errored trials end FAILED with the reason; trials cut by an interrupt are set KILLED by the
    runner (they resume later into the same run).
    """

    def __init__(self, tracker: Tracker, phase: str, searched: list[str], tags: dict[str, str], scheduler: str):
        self.tracker, self.phase, self.searched, self.tags, self.scheduler = tracker, phase, searched, tags, scheduler

    def on_step_begin(self, iteration, trials, **info):
        """Retry queued writes (rate-limited by the tracker's backoff)."""
        self.tracker.flush()

    def _ensure_run(self, trial) -> str:
        key = trial.trial_id
        if not self.tracker.has_run(key):
            cfg = trial.config
            self.tracker.create_run(key, trial_run_name(cfg, self.searched),
                                    {**self.tags, TRIAL_TAG: key, PHASE_TAG: self.phase,
                                     "method": str(cfg.get("method")), "seed": str(cfg.get("seed")),
                                     "otsr.trial_name": str(trial)},
                                    flat_params(cfg), parent="parent")
        return key

    def on_trial_start(self, iteration, trials, trial, **info):
        """Open (or find again, and mark RUNNING) the trial's run."""
        existed = self.tracker.has_run(trial.trial_id)
        key = self._ensure_run(trial)
        if existed:
            self.tracker.set_status(key, "RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """``eval/*`` metrics at the training step; ``train/*`` losses at every readout since the last report."""
        key = self._ensure_run(trial)
        step = int(result.get("step", result.get("training_iteration", 0)))
        now = int(time.time() * 1000)
        self.tracker.log_metrics(key, eval_metrics(result), step, now)
        rows = []
        for h in result.get("train_history") or []:
            ts = int(h.get("time", now / 1000) * 1000)
            rows += [[f"train/{k}", float(v), ts, int(h["step"])] for k, v in h.items() if k.startswith("loss_")]
        self.tracker.log_metric_rows(key, rows)
        if result.get("resumed_from"):
            self.tracker.set_tags(key, {"otsr.resumed_from": result["resumed_from"]})

    def on_trial_complete(self, iteration, trials, trial, **info):
        """End the run FINISHED (or FAILED for a diverged trial) with its artifacts."""
        self.finish(trial, trial.last_result or {}, error=None)

    def on_trial_error(self, iteration, trials, trial, **info):
        """End the run FAILED with the error's last line (called once retries are used up)."""
        self.finish(trial, trial.last_result or {}, error=trial_error(trial))

    def finish(self, trial, last: dict[str, Any], error: str | None) -> None:
        """Log artifacts and end the run FINISHED or FAILED (with the reason)."""
        key = self._ensure_run(trial)
        ckpt = trial.checkpoint
        if ckpt is not None and error is None and Path(ckpt.path).is_dir():
            self.tracker.log_artifacts(key, Path(ckpt.path), "final")
        reason = error or (last.get("reason") if last.get("diverged") else None)
        tags = {"otsr.node_id": last.get("node_id", "")}
        if reason is None and not last.get("final"):
            tags["otsr.stopped_early"] = f"by {self.scheduler.upper()} at step {last.get('step')}"
        if reason:
            tags["otsr.reason"] = reason[:5000]
        self.tracker.set_tags(key, tags)
        self.tracker.set_status(key, "FAILED" if reason else "FINISHED")


def trial_error(trial) -> str:
    """The last line of an errored trial's exception (e.g. 'RuntimeError: trial asked for a GPU ...')."""
    texts = []
    for get in (trial.get_pickled_error, trial.get_error):
        try:
            err = get()
        except Exception:  # storage not synced yet: try the next source
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


class StudyMirror(Callback):
    """Mirror each finished trial into the sweep's persistent Optuna study (``optuna.db``), for
    optuna-dashboard, parameter importances and Pareto plots. Tune's searcher keeps its own in-memory study
    (Ray's OptunaSearch with RDB storage breaks ``Tuner.restore`` in this Ray version); this copy is written
    once per trial id, so a resumed sweep does not duplicate trials."""

    def __init__(self, study_factory, distributions: dict[str, Any], objectives: list[dict[str, str]]):
        self.study_factory, self.distributions, self.objectives = study_factory, distributions, objectives
        self._study = None
        self._history: dict[str, dict[int, float]] = {}

    def __getstate__(self):
        return {**self.__dict__, "_study": None}

    def study(self):
        """The persistent study (opened lazily: callbacks are pickled with Tune's state)."""
        if self._study is None:
            self._study = self.study_factory()
        return self._study

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """Keep the objective at each evaluation (the study's intermediate values)."""
        value = result.get(self.objectives[0]["metric"])
        if isinstance(value, (int, float)) and math.isfinite(value) and "step" in result:
            self._history.setdefault(trial.trial_id, {})[int(result["step"])] = float(value)

    def on_trial_complete(self, iteration, trials, trial, **info):
        """Add the finished (or early-stopped) trial."""
        self._add(trial, trial.last_result or {}, failed=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        """Add the errored trial as FAIL."""
        self._add(trial, trial.last_result or {}, failed=True)

    def _add(self, trial, last: dict[str, Any], failed: bool) -> None:
        from sweep.studies import add_trial

        try:
            params = {k: trial.config[k] for k in self.distributions if k in trial.config}
            add_trial(self.study(), trial.trial_id, params, self.distributions, last, self.objectives, failed,
                      self._history.get(trial.trial_id))
        except Exception as e:  # the study is a record; a failure to write it never stops the sweep
            print(f"otsr-sweep: could not record trial {trial.trial_id} in the Optuna study: {e}", file=sys.stderr)


class ConsoleReporter(Callback):
    """One line per finished trial: method, lambda and searched values, objective, status."""

    def __init__(self, phase: str, searched: list[str], objective: str, total: int):
        self.phase, self.searched, self.objective, self.total = phase, searched, objective, total
        self.done = 0

    def _line(self, trial, status: str) -> None:
        self.done += 1
        last = trial.last_result or {}
        value = last.get(self.objective)
        shown = f"{value:.4g}" if isinstance(value, (int, float)) and math.isfinite(value) else "–"
        name = trial_run_name(trial.config, self.searched)
        print(f"  [{self.phase} {self.done}/{self.total}] {name:<36} {self.objective}={shown:<10} {status}",
              flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        """Finished, stopped early or diverged."""
        last = trial.last_result or {}
        status = ("diverged: " + str(last.get("reason", ""))) if last.get("diverged") else \
            "done" if last.get("final") else f"stopped early at step {last.get('step')}"
        self._line(trial, status)

    def on_trial_error(self, iteration, trials, trial, **info):
        """Errored after its retries."""
        self._line(trial, "error: " + trial_error(trial)[:120])
