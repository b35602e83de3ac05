"""Search-space files: YAML in, a validated ``SweepSpec`` out, before Ray starts.

Searched parameters use Optuna's short form ``{type: float|int|categorical, low, high, log, step,
choices}``, turned into Optuna distributions here (their constructors reject bad ranges), plus
``{type: grid, values: [...]}`` for exhaustive grids (then every searched parameter of that method is a grid).
Every error names the file, the key and the value.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import optuna.distributions as od
import yaml

from otsr.config import METHODS, TrainConfig
from otsr.evaluation import metric_names
from otsr.pairs import make_pair

TOP_KEYS = {"name", "description", "pair", "methods", "objective", "budget", "scheduler", "resources"}
METHOD_KEYS = {"samples", "fixed", "search"}
BUDGET_KEYS = {"steps", "seeds", "eval_every"}
SCHEDULER_KEYS = {"type", "grace_period", "reduction_factor"}
RESOURCE_KEYS = {"cpu", "gpu", "max_concurrent", "custom", "max_failures"}
DIST_KEYS = {"type", "low", "high", "log", "step", "choices", "values"}
SWEEP_OWNED = {"method", "seed", "steps", "eval_every"}  # set by the sweep, not by fixed/search blocks
PERIODIC_METRICS = {"transport_cost", "bias_mean_shift", "bias_sliced_w2", "l2_uvp", "cos", "shift"}


class SpaceError(ValueError):
    """A search-space file is invalid; the message names the file, key and value."""


@dataclasses.dataclass(frozen=True)
class Objective:
    """A metric to optimise and its direction."""

    metric: str
    mode: str  # 'min' or 'max'


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One method of the comparison: fixed trainer settings and searched ones."""

    method: str
    samples: int  # Optuna trials (ignored for grids and for methods without a search)
    fixed: dict[str, Any]
    search: dict[str, od.BaseDistribution]  # Optuna distributions
    grid: dict[str, list]  # exhaustive values (mutually exclusive with ``search``)


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: what to solve, how to compare, the budget, scheduler and resources."""

    name: str
    source: str  # the file it came from
    pair: dict[str, Any]  # {"name": ..., "params": {...}}
    methods: tuple[MethodSpec, ...]
    objectives: tuple[Objective, ...]
    steps: int
    seeds: int
    eval_every: int
    scheduler: dict[str, Any]
    resources: dict[str, Any]
    raw: dict[str, Any]  # the parsed YAML, for the record

    @property
    def multi_objective(self) -> bool:
        """Whether the searched methods trade off several metrics (Pareto front)."""
        return len(self.objectives) > 1


def load_space(path: str | Path, overrides: dict[str, Any] | None = None) -> SweepSpec:
    """Read and validate a search-space YAML file; ``overrides`` replace top-level budget/resources values."""
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"{path}: no such search-space file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpaceError(f"{path}: not valid YAML: {e}") from None
    return parse_space(raw, str(path), overrides)


def _err(src: str, key: str, msg: str) -> SpaceError:
    return SpaceError(f"{src}: {key}: {msg}")


def _check_keys(src: str, where: str, block: Any, allowed: set[str]) -> dict:
    if not isinstance(block, dict):
        raise _err(src, where, f"expected a mapping, got {block!r}")
    unknown = sorted(set(block) - allowed)
    if unknown:
        raise _err(src, f"{where}.{unknown[0]}" if where else unknown[0],
                   f"unknown key (valid: {', '.join(sorted(allowed))})")
    return block


def _positive_int(src: str, key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise _err(src, key, f"{v!r} must be a positive integer")
    return v


def to_distribution(src: str, key: str, d: Any) -> od.BaseDistribution | list:
    """Optuna short form -> distribution; ``grid`` -> list of values."""
    d = _check_keys(src, key, d, DIST_KEYS)
    kind = d.get("type")
    try:
        if kind == "float":
            return od.FloatDistribution(float(d["low"]), float(d["high"]), log=bool(d.get("log", False)),
                                        step=d.get("step"))
        if kind == "int":
            return od.IntDistribution(int(d["low"]), int(d["high"]), log=bool(d.get("log", False)),
                                      step=int(d.get("step", 1)))
        if kind == "categorical":
            return od.CategoricalDistribution(list(d["choices"]))
        if kind == "grid":
            values = d["values"]
            if not isinstance(values, list) or not values:
                raise ValueError(f"values must be a non-empty list, got {values!r}")
            return values
    except KeyError as e:
        raise _err(src, key, f"type {kind!r} needs {e.args[0]!r}") from None
    except (ValueError, TypeError) as e:
        raise _err(src, key, f"{e} (got {d!r})") from None
    raise _err(src, f"{key}.type", f"unknown distribution {kind!r} (valid: float, int, categorical, grid)")


def _sample_value(dist: od.BaseDistribution | list) -> Any:
    if isinstance(dist, list):
        return dist[0]
    if isinstance(dist, od.CategoricalDistribution):
        return dist.choices[0]
    return dist.low


def parse_space(raw: Any, src: str = "<dict>", overrides: dict[str, Any] | None = None) -> SweepSpec:
    """Validate a parsed search space (see ``load_space``)."""
    raw = _check_keys(src, "", raw, TOP_KEYS)
    for key in ("pair", "methods", "objective", "budget"):
        if key not in raw:
            raise _err(src, key, "missing")
    overrides = overrides or {}
    name = str(raw.get("name", Path(src).stem))

    pair_block = _check_keys(src, "pair", raw["pair"], {"name", "params"})
    pair_params = pair_block.get("params") or {}
    try:
        pair = make_pair(str(pair_block.get("name")), **pair_params)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as e:  # DataError is a ValueError
        raise _err(src, "pair", str(e)) from None
    available = metric_names(pair)

    budget = _check_keys(src, "budget", raw["budget"], BUDGET_KEYS)
    steps = _positive_int(src, "budget.steps", overrides.get("steps", budget.get("steps", 1000)))
    seeds = _positive_int(src, "budget.seeds", overrides.get("seeds", budget.get("seeds", 1)))
    eval_every = _positive_int(src, "budget.eval_every", budget.get("eval_every", max(1, steps // 5)))
    eval_every = min(eval_every, steps)

    objectives = _parse_objectives(src, raw["objective"], available)

    methods_block = raw["methods"]
    if not isinstance(methods_block, dict) or not methods_block:
        raise _err(src, "methods", f"expected a mapping of {'/'.join(METHODS)} to settings")
    methods = tuple(_parse_method(src, m, b, overrides.get("samples")) for m, b in methods_block.items())

    sched = _check_keys(src, "scheduler", raw.get("scheduler") or {"type": "asha"}, SCHEDULER_KEYS)
    if sched.get("type", "asha") not in ("asha", "fifo"):
        raise _err(src, "scheduler.type", f"unknown scheduler {sched.get('type')!r} (valid: asha, fifo)")
    sched = {"type": sched.get("type", "asha"),
             "grace_period": _positive_int(src, "scheduler.grace_period", sched.get("grace_period", eval_every)),
             "reduction_factor": _positive_int(src, "scheduler.reduction_factor", sched.get("reduction_factor", 2))}
    if sched["type"] == "asha" and len(objectives) == 1 and objectives[0].metric not in PERIODIC_METRICS:
        raise _err(src, "objective.metric", f"{objectives[0].metric!r} is computed only at the end of a trial; "
                   f"ASHA needs one of {sorted(PERIODIC_METRICS & available)} (or scheduler.type: fifo)")

    res = _check_keys(src, "resources", raw.get("resources") or {}, RESOURCE_KEYS)
    resources = {"cpu": float(overrides.get("cpu", res.get("cpu", 1))),
                 "gpu": float(overrides.get("gpu", res.get("gpu", 0))),
                 "max_concurrent": int(overrides.get("max_concurrent", res.get("max_concurrent", 0))),
                 "custom": dict(res.get("custom") or {}),
                 "max_failures": int(res.get("max_failures", 3))}
    for k in ("cpu", "gpu"):
        if not (math.isfinite(resources[k]) and resources[k] >= 0):
            raise _err(src, f"resources.{k}", f"{resources[k]!r} must be >= 0")
    return SweepSpec(name, src, {"name": pair.name, "params": pair.params()}, methods, objectives, steps, seeds,
                     eval_every, sched, resources, raw)


def _parse_objectives(src: str, block: Any, available: set[str]) -> tuple[Objective, ...]:
    items = block if isinstance(block, list) else [block]
    if not 1 <= len(items) <= 2:
        raise _err(src, "objective", f"one or two objectives, got {len(items)}")
    out = []
    for i, item in enumerate(items):
        key = "objective" if len(items) == 1 else f"objective[{i}]"
        item = _check_keys(src, key, item, {"metric", "mode"})
        metric, mode = item.get("metric"), item.get("mode", "min")
        if metric not in available:
            raise _err(src, f"{key}.metric", f"{metric!r} is not computed for this pair "
                       f"(available: {', '.join(sorted(available))})")
        if mode not in ("min", "max"):
            raise _err(src, f"{key}.mode", f"{mode!r} must be 'min' or 'max'")
        out.append(Objective(metric, mode))
    return tuple(out)


def _parse_method(src: str, method: str, block: Any, samples_override: int | None) -> MethodSpec:
    where = f"methods.{method}"
    if method not in METHODS:
        raise _err(src, where, f"unknown method (valid: {', '.join(METHODS)})")
    block = _check_keys(src, where, block or {}, METHOD_KEYS)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    fixed = dict(block.get("fixed") or {})
    search_raw = dict(block.get("search") or {})
    for part, params in (("fixed", fixed), ("search", search_raw)):
        for k in params:
            if k in SWEEP_OWNED:
                raise _err(src, f"{where}.{part}.{k}", "is set by the sweep (budget block / seeds), not here")
            if k not in fields:
                raise _err(src, f"{where}.{part}.{k}",
                           f"unknown trainer parameter (valid: {', '.join(sorted(fields))})")
    both = sorted(set(fixed) & set(search_raw))
    if both:
        raise _err(src, f"{where}.search.{both[0]}", "is both fixed and searched")
    dists = {k: to_distribution(src, f"{where}.search.{k}", v) for k, v in search_raw.items()}
    grid = {k: v for k, v in dists.items() if isinstance(v, list)}
    search = {k: v for k, v in dists.items() if not isinstance(v, list)}
    if grid and search:
        raise _err(src, f"{where}.search", "mixes grid and sampled parameters; use one kind per method")
    try:  # every fixed value, with a sample of each searched one, must make a valid trainer config
        TrainConfig.from_dict({**fixed, **{k: _sample_value(v) for k, v in dists.items()}, "method": method})
    except ValueError as e:
        raise _err(src, where, str(e)) from None
    samples = _positive_int(src, f"{where}.samples", samples_override or block.get("samples", 1))
    return MethodSpec(method, samples, fixed, search, grid)
