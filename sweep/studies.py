"""Optuna for sweeps: samplers from the space's ``sampler:`` block and the persistent study of a sweep.

``sampler: {type: tpe, n_startup_trials: 4, seed: 0}``; types: tpe, random, cmaes, nsga2, grid, qmc. Every
option is passed to the sampler's constructor and checked against its signature before Ray starts.
"""

from __future__ import annotations

import inspect
import queue
import sys
import threading
from pathlib import Path
from typing import Any

import optuna

SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "cmaes": "CmaEsSampler", "nsga2": "NSGAIISampler",
            "grid": "GridSampler", "qmc": "QMCSampler"}
STUDY_DB = "optuna.db"


def sampler_class(kind: str):
    """The Optuna sampler class of a space's ``sampler.type``."""
    if kind not in SAMPLERS:
        raise ValueError(f"unknown sampler {kind!r} (valid: {', '.join(SAMPLERS)})")
    return getattr(optuna.samplers, SAMPLERS[kind])


def check_sampler(block: dict[str, Any], search: dict[str, Any], multi_objective: bool) -> dict[str, Any]:
    """Validate a ``sampler:`` block (type, options by the constructor's signature); returns it with defaults."""
    block = dict(block or {})
    kind = block.pop("type", "nsga2" if multi_objective else "tpe")
    cls = sampler_class(kind)
    params = inspect.signature(cls).parameters
    for k in block:
        if k not in params or k in ("search_space",):
            raise ValueError(f"sampler {kind!r} has no option {k!r} (valid: "
                             f"{', '.join(p for p in params if p not in ('search_space',))})")
    for k, v in block.items():  # counts and seeds: whole numbers >= 0 (Optuna accepts -1 without a word)
        default = params[k].default
        if isinstance(default, int) and not isinstance(default, bool) and k.startswith(("n_", "seed")) and (
                isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise ValueError(f"sampler option {k}: {v!r} must be an integer >= 0")
    if multi_objective and kind in ("cmaes",):
        raise ValueError(f"sampler {kind!r} is single-objective; a two-objective space needs nsga2, tpe or random")
    if kind == "grid":
        from optuna.distributions import CategoricalDistribution

        bad = [k for k, d in search.items() if not isinstance(d, CategoricalDistribution)]
        if bad:
            raise ValueError(f"sampler 'grid' needs categorical parameters (choices), not {bad}")
    block.setdefault("seed", 0)
    return {"type": kind, **block}


def make_sampler(block: dict[str, Any], search: dict[str, Any]):
    """Build the sampler of a validated block."""
    opts = {k: v for k, v in block.items() if k != "type"}
    if block["type"] == "grid":
        opts["search_space"] = {k: list(d.choices) for k, d in search.items()}
    return sampler_class(block["type"])(**opts)


class StudyTeller:
    """Runs study writes (a member's tell: a dozen user attributes, its curve, its outcome) in a thread of its
    own, in order. The sweep's recorder runs on Tune's event loop, and a bundle of 8 members ending at once took
    0.5 s of sqlite writes there under load (Tune's slow-callback warning); a sampler's next ask waits for
    ``wait()`` so it still sees every member told before it."""

    def __init__(self):
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="otsr-optuna-teller", daemon=True)
        self._thread.start()

    def submit(self, what: str, fn, *args) -> None:
        """Run ``fn(*args)`` after the writes already submitted; a failure is printed with ``what``, never raised
        (the study is a record: resume reads otsr's state file)."""
        if not self._thread.is_alive():
            raise RuntimeError("the study teller is closed")
        self._jobs.put((what, fn, args))

    def wait(self) -> None:
        """Return once every submitted write has run."""
        self._jobs.join()

    def close(self) -> None:
        """Run what is left, then stop the thread."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                what, fn, args = job
                try:
                    fn(*args)
                except Exception as e:
                    print(f"otsr-sweep: could not record {what} in the Optuna study: {type(e).__name__}: {e}",
                          file=sys.stderr)
            finally:
                self._jobs.task_done()


def _storage(url: str) -> optuna.storages.RDBStorage:
    """The study's sqlite storage without an fsync per commit (``PRAGMA synchronous=OFF``): the driver tells a
    member's trial with a dozen user attributes, and with an fsync each that took 20 ms per attribute (1.4 s for a
    bundle of 8; the writes now also run off Tune's event loop, ``StudyTeller``). An application crash loses
    nothing; only an OS crash or power loss can damage the file, and the study is a record (resume reads otsr's
    state file)."""
    from sqlalchemy import event

    storage = optuna.storages.RDBStorage(url)

    @event.listens_for(storage.engine, "connect")
    def _no_fsync(dbapi_connection, _record):
        dbapi_connection.execute("PRAGMA synchronous=OFF")

    storage.engine.dispose()  # the connection that created the tables predates the pragma
    return storage


def open_study(folder: Path, name: str, objectives: list[dict[str, str]], sampler=None) -> optuna.Study:
    """The persistent study ``name`` in the sweep folder's sqlite file (created once, reopened on resume), with
    its objectives' metric names (optuna-dashboard shows them instead of "Objective 0")."""
    storage = _storage(f"sqlite:///{(Path(folder) / STUDY_DB).resolve()}")
    directions = ["minimize" if o["mode"] == "min" else "maximize" for o in objectives]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, directions=directions, load_if_exists=True,
                                sampler=sampler)
    names = [o["metric"] for o in objectives]
    if study.metric_names != names:
        study.set_metric_names(names)  # experimental since Optuna 3.2, stable in use here (sweep.console)
    return study
