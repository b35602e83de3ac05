"""Every MLflow call of a sweep, in one place, made so that a tracking outage never stops or loses a sweep.

Layout: one experiment per search space (``otsr/<space name>``), one parent run per sweep (the space file,
the chosen configuration, the report), one nested run per trial named after what it is (``gan λ=0.154
lr_map=2.3e-3 s1``), with ``eval/*`` metrics at each evaluation and ``train/*`` losses at each readout.

Writes go through a durable queue in the sweep folder (``tracking_queue.jsonl``): each is tried at once and,
if the server does not answer, kept and retried with exponential backoff while trials keep training. Whatever
is still queued when the sweep ends stays on disk and ``otsr-sweep resume`` sends it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from otsr.checkpoint import atomic_write_json

TRIAL_TAG = "otsr.trial_id"
PHASE_TAG = "otsr.phase"
PARENT_TAG = "mlflow.parentRunId"
QUEUE = "tracking_queue.jsonl"
RUNS = "tracking_runs.json"  # local key (trial id, 'parent') -> MLflow run id
MAX_BACKOFF_S = 60.0


class TrackingError(RuntimeError):
    """The tracking URI cannot be used at all (bad scheme, unreachable before the sweep starts)."""


def default_tracking_uri(workdir: Path) -> str:
    """$MLFLOW_TRACKING_URI when set, else the embedded default: an sqlite database in the working directory."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path(workdir) / 'mlflow.db').resolve()}"


def default_artifact_root(workdir: Path) -> str:
    """Artifacts of the embedded default live beside the database."""
    return (Path(workdir) / "mlartifacts").resolve().as_uri()


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before anything is created: a known scheme, and an HTTP server that answers /health."""
    if not uri.startswith(("http://", "https://", "sqlite:///", "file:", "postgresql", "mysql")) and "://" in uri:
        raise TrackingError(f"tracking URI {uri!r}: unsupported scheme (use http(s)://host:port or sqlite:///path)")
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


def version_tags() -> dict[str, str]:
    """Code version tags: MLflow's own git-commit tag (shown in the UI) and otsr's (with '+dirty')."""
    version = code_version()
    return {"mlflow.source.git.commit": version.split("+")[0], "otsr.code_version": version}


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 or v == 0 else f"{v:.2g}"
    return str(v)


def trial_run_name(config: dict[str, Any], searched: list[str]) -> str:
    """``gan λ=0.154 lr_map=0.0023 s1``: method, the searched values, the seed."""
    parts = [str(config.get("method"))]
    for k in searched:
        if k in config:
            parts.append(f"{'λ' if k == 'lam' else k}={_short(config[k])}")
    parts.append(f"s{config.get('seed', 0)}")
    return " ".join(parts)


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


class Tracker:
    """MLflow writes for one sweep folder, queued durably and retried with backoff (see the module docstring).

    Runs are addressed by local keys ('parent', a trial id); their MLflow ids are found or created when the
    queue reaches them, so a run is created once even across driver restarts and outages.
    """

    def __init__(self, uri: str, folder: Path, experiment_id: str):
        self.uri, self.folder, self.experiment_id = uri, Path(folder), experiment_id
        self._client = None
        self._queue: list[dict[str, Any]] = self._load_queue()
        self._runs: dict[str, str] = json.loads((self.folder / RUNS).read_text()) if (self.folder / RUNS).exists() \
            else {}
        self._retry_at, self._backoff = 0.0, 1.0
        self.last_error: str | None = None

    @property
    def client(self):
        """The MLflow client; HTTP requests fail fast (our queue retries, not MLflow's minutes of backoff)."""
        if self._client is None:
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.uri)
        return self._client

    def __getstate__(self):  # Tune pickles callbacks with its experiment state
        return {**self.__dict__, "_client": None}

    # --- the queue ---

    def _load_queue(self) -> list[dict[str, Any]]:
        path = self.folder / QUEUE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def _save_queue(self) -> None:
        path = self.folder / QUEUE
        if not self._queue:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_name(f".{QUEUE}.tmp{os.getpid()}")
        tmp.write_text("".join(json.dumps(op) + "\n" for op in self._queue))
        os.replace(tmp, path)

    @property
    def pending(self) -> int:
        """Writes not yet accepted by the server."""
        return len(self._queue)

    def submit(self, op: dict[str, Any]) -> None:
        """Queue one write and try to send the queue (unless a recent failure says to wait)."""
        self._queue.append(op)
        self.flush()

    def flush(self, force: bool = False) -> bool:
        """Send queued writes in order; stop at the first failure and back off. True when the queue is empty."""
        if not self._queue:
            return True
        if not force and time.monotonic() < self._retry_at:
            self._save_queue()
            return False
        while self._queue:
            try:
                self._apply(self._queue[0])
            except Exception as e:  # any tracking failure: keep the write, never raise into the sweep
                self.last_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                self._retry_at = time.monotonic() + self._backoff
                self._backoff = min(MAX_BACKOFF_S, self._backoff * 2)
                self._save_queue()
                return False
            self._queue.pop(0)
        self._backoff, self.last_error = 1.0, None
        self._save_queue()
        return True

    def drain(self, attempts: int = 3, wait: float = 2.0) -> bool:
        """At the end of a sweep: a few more tries, then leave the rest on disk for ``resume``."""
        for i in range(attempts):
            if self.flush(force=True):
                return True
            time.sleep(wait * (2**i))
        return False

    # --- applying one write ---

    def _run_id(self, key: str) -> str:
        if key not in self._runs:
            raise KeyError(f"MLflow run for {key!r} not created yet")
        return self._runs[key]

    def _apply(self, op: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        kind, key = op["op"], op.get("key")
        if kind == "create_run":
            if key in self._runs:
                return
            runs = self.client.search_runs([self.experiment_id], max_results=1,
                                           filter_string=f"tags.`otsr.key` = '{op['tags']['otsr.key']}'")
            if runs:
                self._runs[key] = runs[0].info.run_id
            else:
                tags = dict(op["tags"])
                if op.get("parent"):
                    tags[PARENT_TAG] = self._run_id(op["parent"])
                run = self.client.create_run(self.experiment_id, run_name=op["name"], tags=tags)
                params = [Param(k, str(v)[:6000]) for k, v in op.get("params", {}).items()]
                if params:
                    self.client.log_batch(run.info.run_id, params=params)
                self._runs[key] = run.info.run_id
            atomic_write_json(self.folder / RUNS, self._runs)
        elif kind == "metrics":
            metrics = [Metric(k, v, ts, step) for k, v, ts, step in op["metrics"]]
            for i in range(0, len(metrics), 900):  # MLflow accepts 1000 metrics per batch
                self.client.log_batch(self._run_id(key), metrics=metrics[i:i + 900])
        elif kind == "tags":
            self.client.log_batch(self._run_id(key), tags=[RunTag(k, str(v)[:5000]) for k, v in op["tags"].items()])
        elif kind == "params":
            self.client.log_batch(self._run_id(key), params=[Param(k, str(v)[:6000]) for k, v in op["params"].items()])
        elif kind == "artifacts":
            if Path(op["path"]).exists():
                if Path(op["path"]).is_dir():
                    self.client.log_artifacts(self._run_id(key), op["path"], artifact_path=op.get("artifact_path"))
                else:
                    self.client.log_artifact(self._run_id(key), op["path"], artifact_path=op.get("artifact_path"))
        elif kind == "status":
            run_id = self._run_id(key)
            if op["status"] == "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            else:
                self.client.set_terminated(run_id, status=op["status"], end_time=op.get("time"))
        else:
            raise ValueError(f"unknown tracking op {kind!r}")

    # --- what the sweep says ---

    def has_run(self, key: str) -> bool:
        """Whether a run for ``key`` exists or is queued."""
        return key in self._runs or any(op["op"] == "create_run" and op.get("key") == key for op in self._queue)

    def create_run(self, key: str, name: str, tags: dict[str, str], params: dict[str, Any] | None = None,
                   parent: str | None = None) -> None:
        """A run for ``key`` (found again by its ``otsr.key`` tag if it already exists)."""
        if self.has_run(key):
            return
        self.submit({"op": "create_run", "key": key, "name": name, "parent": parent,
                     "tags": {**tags, "otsr.key": f"{self.folder.name}/{key}"}, "params": params or {}})

    def log_metrics(self, key: str, values: dict[str, float], step: int, timestamp_ms: int | None = None) -> None:
        """Finite numeric metrics at ``step`` with a real timestamp."""
        ts = int(timestamp_ms if timestamp_ms is not None else time.time() * 1000)
        rows = [[k, float(v), ts, int(step)] for k, v in values.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        if rows:
            self.submit({"op": "metrics", "key": key, "metrics": rows})

    def log_metric_rows(self, key: str, rows: list[list]) -> None:
        """Pre-built rows [name, value, timestamp_ms, step] (e.g. a loss history)."""
        rows = [r for r in rows if math.isfinite(r[1])]
        if rows:
            self.submit({"op": "metrics", "key": key, "metrics": rows})

    def set_tags(self, key: str, tags: dict[str, Any]) -> None:
        """Tags on a run."""
        self.submit({"op": "tags", "key": key, "tags": {k: str(v) for k, v in tags.items()}})

    def log_params(self, key: str, params: dict[str, Any]) -> None:
        """Params on a run (each name once per run)."""
        self.submit({"op": "params", "key": key, "params": {k: str(v) for k, v in params.items()}})

    def log_artifacts(self, key: str, path: Path, artifact_path: str | None = None) -> None:
        """A file or a folder's files as artifacts."""
        self.submit({"op": "artifacts", "key": key, "path": str(path), "artifact_path": artifact_path})

    def set_status(self, key: str, status: str) -> None:
        """RUNNING, FINISHED, FAILED or KILLED (interrupted)."""
        self.submit({"op": "status", "key": key, "status": status, "time": int(time.time() * 1000)})

    def run_id(self, key: str) -> str | None:
        """The MLflow run id of ``key`` once created."""
        return self._runs.get(key)


def get_or_create_experiment(uri: str, name: str, artifact_root: str | None) -> str:
    """Experiment id for ``name`` (one experiment per search space); raises TrackingError when unreachable."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    try:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = f"{artifact_root}/{name.replace('/', '_')}" if artifact_root else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except Exception:  # created meanwhile by a sweep started at the same moment
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id
    except TrackingError:
        raise
    except Exception as e:
        raise TrackingError(f"MLflow at {uri}: cannot open experiment {name!r}: {e}") from None


def otsr_experiments(uri: str) -> list[tuple[str, str]]:
    """(name, id) of the store's sweep experiments (``otsr/<space>``); empty when the store is unreadable."""
    try:
        from mlflow.tracking import MlflowClient

        exps = MlflowClient(uri).search_experiments(filter_string="name LIKE 'otsr/%'")
    except Exception:  # a missing or foreign store: the UI still starts, there is just nothing to list
        return []
    return sorted((e.name, e.experiment_id) for e in exps)


def runs_url(uri: str, experiment_id: str, port: int | None = None) -> str:
    """The UI address of an experiment's runs table (the machine-learning view, not the GenAI one)."""
    base = uri.rstrip("/") if uri.startswith("http") and port is None else f"http://127.0.0.1:{port or 5000}"
    return f"{base}/#/experiments/{experiment_id}?workflowType=machine_learning"


def ui_command(tracking_uri: str, artifact_root: str, port: int) -> list[str]:
    """The `mlflow ui` command for the local store, bound to 127.0.0.1."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
            "--default-artifact-root", artifact_root, "--host", "127.0.0.1", "--port", str(port)]
