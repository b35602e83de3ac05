"""MLflow as the target of the sweep's durable queue: typed operations (create a run, log metrics, tags,
params, artifacts, a table, set a status or a name), each a small dataclass that knows how to apply itself, and
the registry of runs (local key -> MLflow run id, kept in ``tracking_runs.json``).

A new sqlite store is created (and migrated) under a file lock, so sweeps started at the same moment on a new
store do not race in MLflow's schema migration (which left a store that every later sweep failed on).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar

from filelock import FileLock

from otsr.checkpoint import atomic_write_json

PARENT_TAG = "mlflow.parentRunId"
RUNS = "tracking_runs.json"  # local key (member key, 'parent') -> MLflow run id


def client_env() -> None:
    """HTTP requests fail fast: the durable queue retries, not MLflow's minutes of backoff. Ending a run on a
    tracking server prints no "View run ... at" lines (two per run, even at --verbose 0; the sweep prints the
    views' address once) and skips the extra request that fetched the run to print them."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


@contextlib.contextmanager
def store_lock(uri: str):
    """Serialise first use of a local sqlite store across processes (creation and schema migration)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db) + ".lock", timeout=300):
        yield


def open_client(uri: str):
    """An MlflowClient whose store exists and is migrated (created under ``store_lock`` the first time)."""
    client_env()
    from mlflow.tracking import MlflowClient

    with store_lock(uri):
        client = MlflowClient(uri)
        if uri.startswith("sqlite:///"):
            client.search_experiments(max_results=1)  # creates and migrates the store while we hold the lock
    return client


class Op:
    """One MLflow write; ``kind`` names it in the queue file."""

    kind: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        """The queue's JSON line."""
        return {"op": self.kind, **dataclasses.asdict(self)}

    def apply(self, sink: MlflowSink) -> None:
        """Send it."""
        raise NotImplementedError


@dataclasses.dataclass
class CreateRun(Op):
    """A run for ``key`` (found again by its ``otsr.key`` tag if a previous driver created it)."""

    kind: ClassVar[str] = "create_run"
    key: str
    name: str
    tags: dict[str, str]
    params: dict[str, Any]
    parent: str | None = None

    def apply(self, sink: MlflowSink) -> None:
        """Create or find the run, then remember its id."""
        from mlflow.entities import Param

        if self.key in sink.runs:
            return
        found = sink.client.search_runs([sink.experiment_id], max_results=1,
                                        filter_string=f"tags.`otsr.key` = '{self.tags['otsr.key']}'")
        if found:
            sink.remember(self.key, found[0].info.run_id)
            return
        tags = dict(self.tags)
        if self.parent:
            tags[PARENT_TAG] = sink.run_id(self.parent)
        run = sink.client.create_run(sink.experiment_id, run_name=self.name, tags=tags)
        params = [Param(k, str(v)[:6000]) for k, v in self.params.items()]
        for i in range(0, len(params), 90):
            sink.client.log_batch(run.info.run_id, params=params[i:i + 90])
        sink.remember(self.key, run.info.run_id)


@dataclasses.dataclass
class LogMetrics(Op):
    """Rows [name, value, timestamp_ms, step]."""

    kind: ClassVar[str] = "metrics"
    key: str
    rows: list[list]

    def apply(self, sink: MlflowSink) -> None:
        """In batches of 900 (MLflow takes 1000 per call)."""
        from mlflow.entities import Metric

        metrics = [Metric(k, v, ts, step) for k, v, ts, step in self.rows]
        for i in range(0, len(metrics), 900):
            sink.client.log_batch(sink.run_id(self.key), metrics=metrics[i:i + 900])


@dataclasses.dataclass
class SetTags(Op):
    """Tags on a run (``mlflow.runName`` renames it)."""

    kind: ClassVar[str] = "tags"
    key: str
    tags: dict[str, str]

    def apply(self, sink: MlflowSink) -> None:
        """One batch."""
        from mlflow.entities import RunTag

        sink.client.log_batch(sink.run_id(self.key), tags=[RunTag(k, str(v)[:5000]) for k, v in self.tags.items()])


@dataclasses.dataclass
class LogParams(Op):
    """Params on a run (each name once per run)."""

    kind: ClassVar[str] = "params"
    key: str
    params: dict[str, str]

    def apply(self, sink: MlflowSink) -> None:
        """One batch."""
        from mlflow.entities import Param

        sink.client.log_batch(sink.run_id(self.key), params=[Param(k, str(v)[:6000]) for k, v in self.params.items()])


@dataclasses.dataclass
class LogArtifacts(Op):
    """A file, or a folder's files, as artifacts (skipped if it no longer exists)."""

    kind: ClassVar[str] = "artifacts"
    key: str
    path: str
    artifact_path: str | None = None

    def apply(self, sink: MlflowSink) -> None:
        """Upload."""
        p = Path(self.path)
        if p.is_dir():
            sink.client.log_artifacts(sink.run_id(self.key), str(p), artifact_path=self.artifact_path)
        elif p.is_file():
            sink.client.log_artifact(sink.run_id(self.key), str(p), artifact_path=self.artifact_path)


@dataclasses.dataclass
class LogTable(Op):
    """A table artifact (column -> values), shown by MLflow's artifact viewer and ``mlflow.load_table``."""

    kind: ClassVar[str] = "table"
    key: str
    data: dict[str, list]
    artifact_file: str

    def apply(self, sink: MlflowSink) -> None:
        """Upload as JSON in MLflow's table format."""
        sink.client.log_table(sink.run_id(self.key), data=self.data, artifact_file=self.artifact_file)


@dataclasses.dataclass
class SetStatus(Op):
    """RUNNING, FINISHED, FAILED or KILLED."""

    kind: ClassVar[str] = "status"
    key: str
    status: str
    time: int

    def apply(self, sink: MlflowSink) -> None:
        """Reopen or terminate the run."""
        run_id = sink.run_id(self.key)
        if self.status == "RUNNING":
            sink.client.update_run(run_id, status="RUNNING")
        else:
            sink.client.set_terminated(run_id, status=self.status, end_time=self.time)


@dataclasses.dataclass
class SetNote(Op):
    """A run's description (Markdown, ``mlflow.note.content``); ``{run_id}`` in it becomes the run's id when sent,
    so it can link the run's own artifacts even if the run was created after the note was queued."""

    kind: ClassVar[str] = "note"
    key: str
    text: str

    def apply(self, sink: MlflowSink) -> None:
        """One tag."""
        run_id = sink.run_id(self.key)
        sink.client.set_tag(run_id, "mlflow.note.content", self.text.replace("{run_id}", run_id)[:8000])


@dataclasses.dataclass
class SetExperimentTags(Op):
    """Tags on the sweep's experiment (its saved views)."""

    kind: ClassVar[str] = "experiment_tags"
    tags: dict[str, str]

    def apply(self, sink: MlflowSink) -> None:
        """One call per tag (MLflow has no batch for experiment tags)."""
        for k, v in self.tags.items():
            sink.client.set_experiment_tag(sink.experiment_id, k, v)


OPS: dict[str, type[Op]] = {cls.kind: cls for cls in (CreateRun, LogMetrics, SetTags, LogParams, LogArtifacts,
                                                      LogTable, SetStatus, SetNote, SetExperimentTags)}


def op_from_json(d: dict[str, Any]) -> Op:
    """Rebuild an operation from its queue line; unknown kinds raise naming them."""
    d = dict(d)
    kind = d.pop("op")
    if kind not in OPS:
        raise ValueError(f"unknown tracking operation {kind!r}")
    return OPS[kind](**d)


class MlflowSink:
    """Applies operations to one experiment of one tracking store and keeps the sweep's run registry."""

    def __init__(self, uri: str, experiment_id: str, folder: Path):
        self.uri, self.experiment_id, self.folder = uri, experiment_id, Path(folder)
        self._client = None
        path = self.folder / RUNS
        self.runs: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}

    @property
    def client(self):
        """The MLflow client, opened on first use."""
        if self._client is None:
            self._client = open_client(self.uri)
        return self._client

    def run_id(self, key: str) -> str:
        """The MLflow run id of ``key``; raises KeyError while its creation is still queued."""
        if key not in self.runs:
            raise KeyError(f"MLflow run for {key!r} not created yet")
        return self.runs[key]

    def remember(self, key: str, run_id: str) -> None:
        """Record a run id (durably: resume and the report read it)."""
        self.runs[key] = run_id
        atomic_write_json(self.folder / RUNS, self.runs)

    def __call__(self, op: dict[str, Any]) -> None:
        """Apply one queued operation."""
        op_from_json(op).apply(self)
