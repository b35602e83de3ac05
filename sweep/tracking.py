"""MLflow for sweeps: the embedded default store, reachability checks, the parent run, and a Tune
callback that keeps exactly one nested run per trial (also across driver restarts and trial retries)."""

from __future__ import annotations

import math
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

TRIAL_TAG = "otsr.trial_id"
PHASE_TAG = "otsr.phase"
PARENT_TAG = "mlflow.parentRunId"


class TrackingError(RuntimeError):
    """The tracking URI cannot be used (unreachable server, bad path)."""


def default_tracking_uri(workdir: Path) -> str:
    """Embedded default: an sqlite database in the working directory."""
    return f"sqlite:///{(Path(workdir) / 'mlflow.db').resolve()}"


def default_artifact_root(workdir: Path) -> str:
    """Artifacts of the embedded default live beside the database."""
    return (Path(workdir) / "mlartifacts").resolve().as_uri()


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any trial starts, when an HTTP tracking server does not answer /health."""
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (user-given tracking server)
            if r.status != 200:
                raise TrackingError(f"MLflow tracking server {uri} answered {r.status} on /health")
    except (urllib.error.URLError, OSError) as e:
        raise TrackingError(f"MLflow tracking server {uri} is unreachable ({e}); start it or pass "
                            f"another --tracking-uri") from None


def get_or_create_experiment(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    """Experiment id for ``name`` (one experiment per sweep)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = f"{artifact_root}/{name}" if artifact_root else None
    return client.create_experiment(name, artifact_location=location)


def flat_params(config: dict[str, Any]) -> dict[str, str]:
    """Trial config as MLflow params (the pair spec flattened to pair.name / pair.<param>)."""
    out = {}
    for k, v in config.items():
        if k == "pair":
            out["pair.name"] = str(v["name"])
            out.update({f"pair.{pk}": str(pv) for pk, pv in v["params"].items()})
        else:
            out[k] = str(v)
    return out


def find_run(client: MlflowClient, experiment_id: str, key: str, value: str):
    """The run tagged ``key = value`` in the experiment, or None."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{key}` = '{value}'", max_results=2)
    return runs[0] if runs else None


class TrialLogger(Callback):
    """Tune callback: one nested MLflow run per trial, named after it, under the sweep's parent run.

    Runs are found again by the ``otsr.trial_id`` tag, so a retried trial or a restarted driver keeps
    logging into the same run. Finished trials get their last checkpoint's files (map PNG, checkpoint,
    metrics) as artifacts; diverged and errored trials end FAILED with the reason as a tag.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, phase: str,
                 tags: dict[str, str]):
        self.tracking_uri, self.experiment_id, self.parent_run_id = tracking_uri, experiment_id, parent_run_id
        self.phase, self.tags = phase, tags
        self._runs: dict[str, str] = {}
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        """The MLflow client, made lazily (the callback is pickled with Tune's experiment state)."""
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def __getstate__(self):  # Tune checkpoints callbacks; the client is rebuilt on restore
        return {**self.__dict__, "_client": None}

    def run_id(self, trial) -> str:
        """Find or create the run of ``trial``."""
        tid = trial.trial_id
        if tid not in self._runs:
            found = find_run(self.client, self.experiment_id, TRIAL_TAG, tid)
            if found is None:
                tags = {**self.tags, TRIAL_TAG: tid, PHASE_TAG: self.phase, PARENT_TAG: self.parent_run_id,
                        "method": str(trial.config.get("method")), "seed": str(trial.config.get("seed"))}
                run = self.client.create_run(self.experiment_id, run_name=str(trial), tags=tags)
                params = [Param(k, v[:6000]) for k, v in flat_params(trial.config).items()]
                self.client.log_batch(run.info.run_id, params=params)
                self._runs[tid] = run.info.run_id
            else:
                self._runs[tid] = found.info.run_id
                if found.info.status != "RUNNING":
                    self.client.update_run(found.info.run_id, status="RUNNING")
        return self._runs[tid]

    def on_trial_start(self, iteration, trials, trial, **info):
        """Open (or find again) the trial's run."""
        self.run_id(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """Log the numeric fields of a result at the trial's training step."""
        step = int(result.get("step", result.get("training_iteration", 0)))
        metrics = [Metric(k, float(v), 0, step) for k, v in result.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   and k not in ("time_this_iter_s", "timestamp", "pid", "training_iteration")]
        self.client.log_batch(self.run_id(trial), metrics=metrics)

    def on_trial_complete(self, iteration, trials, trial, **info):
        """End the run FINISHED (or FAILED for a diverged trial) with its artifacts."""
        self.finish(trial, trial.last_result or {}, error=None)

    def on_trial_error(self, iteration, trials, trial, **info):
        """End the run FAILED with the error's last line (called once retries are used up)."""
        err = trial.get_error()
        self.finish(trial, trial.last_result or {}, error=str(err).strip().splitlines()[-1] if err else "error")

    def finish(self, trial, last: dict[str, Any], error: str | None) -> None:
        """Log artifacts and end the run FINISHED or FAILED (with the reason)."""
        run_id = self.run_id(trial)
        ckpt = trial.checkpoint
        if ckpt is not None and error is None and Path(ckpt.path).is_dir():
            self.client.log_artifacts(run_id, ckpt.path, artifact_path="final")
        reason = error or (last.get("reason") if last.get("diverged") else None)
        if reason is None and not last.get("final"):
            self.client.set_tag(run_id, "otsr.stopped_early", "true")  # ASHA: a normal, finished outcome
        if reason:
            self.client.set_tag(run_id, "otsr.reason", reason[:5000])
        self.client.set_terminated(run_id, status="FAILED" if reason else "FINISHED")


def start_parent_run(client: MlflowClient, experiment_id: str, name: str, tags: dict[str, str],
                     params: dict[str, Any]) -> str:
    """The sweep's parent run."""
    run = client.create_run(experiment_id, run_name=name, tags={**tags, "otsr.kind": "sweep"})
    client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()],
                     tags=[RunTag("otsr.sweep", name)])
    return run.info.run_id


def code_version() -> str:
    """The git commit of the working tree (with '+dirty'), or 'unknown' outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def ui_command(tracking_uri: str, artifact_root: str, port: int) -> list[str]:
    """The `mlflow ui` command for the local store, bound to 127.0.0.1."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
            "--default-artifact-root", artifact_root, "--host", "127.0.0.1", "--port", str(port)]
