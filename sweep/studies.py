"""Optuna for sweeps: samplers from the space's ``sampler:`` block and the persistent study of a sweep.

``sampler: {type: tpe, n_startup_trials: 4, seed: 0}``; types: tpe, random, cmaes, nsga2, grid, qmc. Every
option is passed to the sampler's constructor and checked against its signature before Ray starts.
"""

from __future__ import annotations

import inspect
import math
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


def open_study(folder: Path, name: str, objectives: list[dict[str, str]]) -> optuna.Study:
    """The persistent study ``name`` in the sweep folder's sqlite file (created once, reopened on resume)."""
    storage = f"sqlite:///{(Path(folder) / STUDY_DB).resolve()}"
    directions = ["minimize" if o["mode"] == "min" else "maximize" for o in objectives]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=name, storage=storage, directions=directions, load_if_exists=True)


def add_trial(study: optuna.Study, trial_id: str, params: dict[str, Any], distributions: dict[str, Any],
              last: dict[str, Any], objectives: list[dict[str, str]], failed: bool,
              history: dict[int, float] | None = None) -> None:
    """Record one Tune trial (once per trial id): params, objective value(s), intermediate values, state.

    A trial that ran to the end is COMPLETE, one stopped early by the scheduler PRUNED (with its intermediate
    values), a diverged or errored one FAIL.
    """
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("tune_trial_id") == trial_id:
            return
    values = [last.get(o["metric"]) for o in objectives]
    ok = not failed and not last.get("diverged") and all(isinstance(v, (int, float)) and math.isfinite(v)
                                                          for v in values)
    state = optuna.trial.TrialState.COMPLETE if ok and last.get("final") else \
        optuna.trial.TrialState.PRUNED if ok else optuna.trial.TrialState.FAIL
    trial = optuna.trial.create_trial(
        params=params, distributions={k: distributions[k] for k in params}, state=state,
        values=[float(v) for v in values] if state == optuna.trial.TrialState.COMPLETE else None,
        intermediate_values={int(s): float(v) for s, v in (history or {}).items() if math.isfinite(v)},
        user_attrs={"tune_trial_id": trial_id, "step": int(last.get("step", 0)),
                    "reason": str(last.get("reason", "")) if last.get("diverged") else ""})
    study.add_trial(trial)
