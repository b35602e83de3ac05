"""What the sweep tells MLflow, in one place, made so that a tracking outage never stops or loses a sweep.

Layout: one experiment per search space (``otsr/<space name>``), one parent run per sweep (the space file, the
chosen configuration, the comparison figure and table), one nested run per member configuration named after
what it is (``gan λ=0.154 lr_map=0.0023 s1``), tagged with its role (``search``, ``best``, ``ots``, ...) and
outcome, with ``eval/*`` metrics at each evaluation, ``train/*`` losses at each readout and the member's run
folder as artifacts. Every write to a sweep's experiment goes through ``DurableQueue``
(``tracking_queue.jsonl``) to ``MlflowSink``; while a sweep runs, one drainer thread sends them (``Tracker.start``),
so Tune's callbacks only append. Only the experiment's lookup or creation (``get_or_create_experiment``) is a
direct call: it is the check, before anything exists, that the tracking URI works.
"""

from __future__ import annotations

import math
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from otsr.methods import METHODS
from otsr.provenance import code_version
from sweep.mlflow_sink import (
    CreateRun,
    LogArtifacts,
    LogMetrics,
    LogParams,
    LogTable,
    MlflowSink,
    SetExperimentTags,
    SetNote,
    SetStatus,
    SetTags,
    client_env,
    open_client,
)
from sweep.queue import DurableQueue

QUEUE = "tracking_queue.jsonl"
MEMBER_TAG = "otsr.member"
PHASE_TAG = "otsr.phase"
ROLE_TAG = "role"
OUTCOME_TAG = "otsr.outcome"


class TrackingError(RuntimeError):
    """The tracking URI cannot be used at all (bad scheme, missing folder, unreachable before the sweep starts)."""


def default_tracking_uri(workdir: Path) -> str:
    """$MLFLOW_TRACKING_URI when set, else the embedded default: an sqlite database in the working directory."""
    import os

    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path(workdir) / 'mlflow.db').resolve()}"


def default_artifact_root(workdir: Path) -> str:
    """Artifacts of the embedded default live beside the database."""
    return (Path(workdir) / "mlartifacts").resolve().as_uri()


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before anything is created: a known scheme, an existing folder for sqlite, an HTTP server that
    answers /health."""
    if not uri.startswith(("http://", "https://", "sqlite:///", "file:", "postgresql", "mysql")) and "://" in uri:
        raise TrackingError(f"tracking URI {uri!r}: unsupported scheme (use http(s)://host:port or sqlite:///path)")
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise TrackingError(f"tracking URI {uri!r}: folder {folder} does not exist")
        return
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


def server_answers(uri: str, timeout: float = 1.0) -> bool:
    """Whether an MLflow server answers /health at ``uri`` (http only)."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:  # noqa: S310
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def version_tags() -> dict[str, str]:
    """Code version tags: MLflow's own git-commit tag (shown in the UI) and otsr's (with '+dirty')."""
    version = code_version()
    return {"mlflow.source.git.commit": version.split("+")[0], "otsr.code_version": version}


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if 1e-3 <= abs(v) < 1e4 or v == 0 else f"{v:.2g}"
    return str(v)


def _method(settings: dict[str, Any]):
    """The settings' registered method (None for an unknown name)."""
    return METHODS.get(str(settings.get("method")))


def _is_reference(settings: dict[str, Any]) -> bool:
    method = _method(settings)
    return method is not None and method.reference


def _knob(settings: dict[str, Any]) -> tuple[str | None, str]:
    """The swept knob of the settings' method and how it is written (``('lam', 'λ')``; None for a reference)."""
    method = _method(settings)
    return (method.swept, method.symbol) if method is not None and method.swept else (None, "")


def member_run_name(settings: dict[str, Any], searched: list[str]) -> str:
    """``gan λ=0.154 lr_map=0.0023 s1``: method, the searched values, the seed."""
    parts = [str(settings.get("method"))]
    knob, symbol = _knob(settings)
    for k in searched:
        if k in settings:
            parts.append(f"{symbol if k == knob else k}={_short(settings[k])}")
    parts.append(f"s{settings.get('seed', 0)}")
    return " ".join(parts)


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def knob_ranges(spec) -> dict[str, tuple[float, float]]:
    """The lowest and highest value a sweep (``SweepSpec``) tries of each swept knob that is a positive number."""
    out: dict[str, tuple[float, float]] = {}
    for m in spec.methods:
        knob = METHODS[m.method].swept if m.method in METHODS else None
        if not knob:
            continue
        if knob in m.search:
            d = m.search[knob]
            values = list(getattr(d, "choices", ())) or [getattr(d, "low", None), getattr(d, "high", None)]
        else:
            values = list(m.grid.get(knob, [m.fixed.get(knob)]))
        values = [float(v) for v in values if _positive(v)]
        if values:
            lo, hi = out.get(knob, (min(values), max(values)))
            out[knob] = (min(lo, *values), max(hi, *values))
    return out


def reference_positions(spec) -> dict[str, float]:
    """Where a sweep's reference runs (OTS) stand on each swept knob's log10 axis: ⌊log10 of the lowest value the
    sweep tries⌋ - 1 (λ from 1e-3 puts OTS at log10 λ = -4, from 0.5 at -2), so MLflow's scatter plots show them as
    their own points left of the swept curve. ``spec`` is a ``SweepSpec``; knobs that are not positive numbers get
    none."""
    return {k: math.floor(math.log10(lo)) - 1.0 for k, (lo, _) in knob_ranges(spec).items()}


COLOR_TAG = "mlflow.runColor"  # the tag MLflow's UI keeps a run's colour in (its colour picker writes it)
REFERENCE_COLOR, BEST_COLOR = "#111111", "#d62728"  # black references, the chosen configuration red
_LOW, _HIGH = (158, 202, 225), (8, 48, 107)  # search runs: light blue at the lowest knob value to dark blue


def run_color(settings: dict[str, Any], role: str, ranges: dict[str, tuple[float, float]]) -> str:
    """A member run's colour in MLflow's charts, so references, the chosen configuration and the search (shaded
    by the knob, on a log scale over ``ranges``, ``knob_ranges``) read apart instead of MLflow's reused palette."""
    if _is_reference(settings):
        return REFERENCE_COLOR
    if role == "best":
        return BEST_COLOR
    knob, _ = _knob(settings)
    value, (lo, hi) = settings.get(knob), ranges.get(knob, (0.0, 0.0))
    t = 0.5
    if _positive(value) and 0 < lo < hi:
        t = min(max((math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo)), 0.0), 1.0)
    return "#" + "".join(f"{round(a + t * (b - a)):02x}" for a, b in zip(_LOW, _HIGH))


def run_params(settings: dict[str, Any], pair: dict[str, Any],
               reference_x: dict[str, float] | None = None) -> dict[str, str]:
    """A member's MLflow params: its trainer settings, the pair spec flattened to pair.name / pair.<param>, and
    log10_<knob> of its method's swept knob (log10_lam: MLflow's scatter and parallel-coordinate plots then read
    lambda on a log axis). A reference run gets each knob's position from ``reference_x``
    (``reference_positions``) instead, so it stands in the same charts."""
    out = {k: str(v) for k, v in settings.items()}
    out["pair.name"] = str(pair["name"])
    out.update({f"pair.{k}": str(v) for k, v in pair.get("params", {}).items()})
    knob, _ = _knob(settings)
    value = settings.get(knob) if knob else None
    if _positive(value):
        out[f"log10_{knob}"] = f"{math.log10(value):.4f}"
    if _is_reference(settings):
        out.update({f"log10_{k}": f"{x:.4f}" for k, x in (reference_x or {}).items()})
    return out


def knob_metrics(settings: dict[str, Any]) -> dict[str, float]:
    """The swept knob's value as a metric (``{'lam': 0.154}``; empty for a reference): MLflow sorts params as text,
    metrics as numbers, so the comparison view orders the runs by this."""
    knob, _ = _knob(settings)
    value = settings.get(knob) if knob else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {knob: float(value)}
    return {}


class Tracker:
    """MLflow writes for one sweep folder, queued durably (see the module docstring); runs are addressed by
    local keys ('parent', a member key) and created once even across driver restarts and outages."""

    def __init__(self, uri: str, folder: Path, experiment_id: str):
        self.uri, self.folder, self.experiment_id = uri, Path(folder), experiment_id
        self.sink = MlflowSink(uri, experiment_id, folder)
        self.queue = DurableQueue(self.folder / QUEUE, self.sink)

    @property
    def pending(self) -> int:
        """Writes not yet accepted by the server."""
        return len(self.queue)

    @property
    def last_error(self) -> str | None:
        """The last failure's one-line description."""
        return self.queue.last_error

    def flush(self, force: bool = False) -> bool:
        """Send what is queued (rate-limited by the backoff unless ``force``; while the drainer runs, an unforced
        flush only wakes it)."""
        return self.queue.flush(force)

    def start(self) -> None:
        """From now on one background thread sends every write; callers only append."""
        self.queue.start()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for everything queued to be sent."""
        return self.queue.wait_idle(timeout)

    def drain(self, attempts: int = 3, wait: float = 2.0) -> bool:
        """At the end of a sweep: stop the drainer, a few more tries, then leave the rest on disk for ``resume``."""
        return self.queue.drain(attempts, wait)

    def has_run(self, key: str) -> bool:
        """Whether a run for ``key`` exists or is queued."""
        return key in self.sink.runs or any(op["op"] == "create_run" and op.get("key") == key
                                            for op in self.queue.snapshot())

    def run_ids(self) -> dict[str, str]:
        """Local key -> MLflow run id of the runs created so far."""
        return dict(self.sink.runs)

    def create_run(self, key: str, name: str, tags: dict[str, str], params: dict[str, Any] | None = None,
                   parent: str | None = None) -> None:
        """A run for ``key`` (found again by its ``otsr.key`` tag if it already exists)."""
        if self.has_run(key):
            return
        self.queue.submit(CreateRun(key, name, {**tags, "otsr.key": f"{self.folder.name}/{key}"},
                                    params or {}, parent).to_json())

    def log_metrics(self, key: str, values: dict[str, float], step: int, timestamp_ms: int | None = None) -> None:
        """Finite numeric metrics at ``step`` with a real timestamp."""
        ts = int(timestamp_ms if timestamp_ms is not None else time.time() * 1000)
        rows = [[k, float(v), ts, int(step)] for k, v in values.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        self.log_metric_rows(key, rows)

    def log_metric_rows(self, key: str, rows: list[list]) -> None:
        """Pre-built rows [name, value, timestamp_ms, step] (e.g. a loss history)."""
        rows = [r for r in rows if math.isfinite(r[1])]
        if rows:
            self.queue.submit(LogMetrics(key, rows).to_json())

    def set_tags(self, key: str, tags: dict[str, Any]) -> None:
        """Tags on a run."""
        self.queue.submit(SetTags(key, {k: str(v) for k, v in tags.items()}).to_json())

    def rename(self, key: str, name: str) -> None:
        """A run's displayed name."""
        self.set_tags(key, {"mlflow.runName": name})

    def log_params(self, key: str, params: dict[str, Any]) -> None:
        """Params on a run (each name once per run)."""
        self.queue.submit(LogParams(key, {k: str(v) for k, v in params.items()}).to_json())

    def log_artifacts(self, key: str, path: Path, artifact_path: str | None = None) -> None:
        """A file or a folder's files as artifacts."""
        self.queue.submit(LogArtifacts(key, str(path), artifact_path).to_json())

    def log_table(self, key: str, data: dict[str, list], artifact_file: str) -> None:
        """A table artifact (MLflow's table format)."""
        self.queue.submit(LogTable(key, data, artifact_file).to_json())

    def set_note(self, key: str, text: str) -> None:
        """A run's Markdown description; ``{run_id}`` in it is the run's id (to link its own artifacts)."""
        self.queue.submit(SetNote(key, text).to_json())

    def set_experiment_tags(self, tags: dict[str, str]) -> None:
        """Tags on the sweep's experiment (the saved views)."""
        self.queue.submit(SetExperimentTags({k: str(v) for k, v in tags.items()}).to_json())

    def set_status(self, key: str, status: str) -> None:
        """RUNNING, FINISHED, FAILED or KILLED (interrupted, or stopped early by the scheduler)."""
        self.queue.submit(SetStatus(key, status, int(time.time() * 1000)).to_json())


def get_or_create_experiment(uri: str, name: str, artifact_root: str | None) -> str:
    """Experiment id for ``name`` (one experiment per search space); raises TrackingError when unusable."""
    client_env()
    try:
        client = open_client(uri)
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
        exps = open_client(uri).search_experiments(filter_string="name LIKE 'otsr/%'")
    except Exception:  # a missing or foreign store: the UI still starts, there is just nothing to list
        return []
    return sorted((e.name, e.experiment_id) for e in exps)


def ui_base(tracking_uri: str) -> str | None:
    """The UI's address for a tracking URI that is a server (None for a local store: no UI runs for it)."""
    return tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else None


def ui_command(tracking_uri: str, artifact_root: str, port: int) -> list[str]:
    """The `mlflow ui` command for the local store, bound to 127.0.0.1."""
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
            "--default-artifact-root", artifact_root, "--host", "127.0.0.1", "--port", str(port)]
