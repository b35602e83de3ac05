"""Search-space files: YAML in, a validated ``SweepSpec`` out, before Ray starts and before anything is created.

Searched parameters use Optuna's short form ``{type: float|int|categorical, low, high, log, step,
choices}``, turned into Optuna distributions here (their constructors reject bad ranges), plus
``{type: grid, values: [...]}`` for exhaustive grids (then every searched parameter of that method is a grid).
Every field's type and range is checked, both bounds and every choice must make a valid trainer config, and
duplicate YAML keys are errors. Every error names the file, the key and the value.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Any

import optuna.distributions as od
import yaml

from otsr.config import METHODS, TrainConfig
from otsr.evaluation import check_pair, metric_names
from otsr.methods import get_method, owner
from otsr.metric_registry import metric_direction
from otsr.pairs import PairSpec
from otsr.recipes import resolve_config

TOP_KEYS = {"name", "description", "pair", "methods", "objective", "budget", "scheduler", "resources", "sampler"}
METHOD_KEYS = {"samples", "fixed", "search", "bundle"}
MAX_STEPS, MAX_SAMPLES, MAX_BUNDLE = 10**8, 10**5, 1024  # beyond these a value is a typo, not a plan
BUDGET_KEYS = {"steps", "seeds", "eval_every"}
SCHEDULER_KEYS = {"type", "grace_period", "reduction_factor", "also_rank_by"}
RESOURCE_KEYS = {"cpu", "gpu", "threads", "max_concurrent", "custom", "max_failures"}
DIST_KEYS = {"type", "low", "high", "log", "step", "choices", "values"}
SWEEP_OWNED = {"method", "seed", "steps", "eval_every"}  # set by the sweep, not by fixed/search blocks
OVERRIDE_KEYS = {"samples", "steps", "seeds", "cpu", "gpu", "threads", "max_concurrent"}


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
    samples: int  # Optuna trials = member configurations (ignored for grids and for methods without a search)
    fixed: dict[str, Any]
    search: dict[str, od.BaseDistribution]  # Optuna distributions
    grid: dict[str, list]  # exhaustive values (mutually exclusive with ``search``)
    bundle: int = 1  # configurations trained together in one trial (one process, stacked networks)


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: what to solve, how to compare, the budget, sampler, scheduler and resources."""

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
    sampler: dict[str, Any]  # {"type": "tpe", **options}
    raw: dict[str, Any]  # the parsed YAML, for the record

    @property
    def multi_objective(self) -> bool:
        """Whether the searched methods trade off several metrics (Pareto front)."""
        return len(self.objectives) > 1


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would silently keep the last)."""


def _construct_unique(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (also on line "
                                                    f"{seen[key] + 1})", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique)
# YAML 1.1 reads 1.0e5 (no exponent sign) as a string; read it as the number everyone means (as YAML 1.2 does)
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$|^[-+]?\.[0-9_]+[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def load_space(path: str | Path, overrides: dict[str, Any] | None = None) -> SweepSpec:
    """Read and validate a search-space YAML file; ``overrides`` replace top-level budget/resources values."""
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"{path}: no such search-space file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpaceError(f"{path}: not a UTF-8 text file (byte {e.start}); save the space as UTF-8 YAML") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpaceError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse_space(raw, str(path), overrides)


def _err(src: str, key: str, msg: str) -> SpaceError:
    return SpaceError(f"{src}: {key}: {msg}")


def _check_keys(src: str, where: str, block: Any, allowed: set[str]) -> dict:
    if not isinstance(block, dict):
        raise _err(src, where, f"expected a mapping, got {block!r}")
    unknown = sorted(set(block) - allowed, key=str)
    if unknown:
        raise _err(src, f"{where}.{unknown[0]}" if where else str(unknown[0]),
                   f"unknown key (valid: {', '.join(sorted(allowed))})")
    return block


def _int(src: str, key: str, v: Any, low: int, high: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _err(src, key, f"{v!r} is not an integer")
    if v < low or (high is not None and v > high):
        raise _err(src, key, f"{v!r} must be an integer in [{low}, {high}]" if high else
                   f"{v!r} must be an integer >= {low}")
    return v


def _number(src: str, key: str, v: Any, low: float = 0.0) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < low:
        raise _err(src, key, f"{v!r} must be a number >= {low:g}")
    return float(v)


def _bool(src: str, key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _err(src, key, f"{v!r} must be true or false (not a string)")
    return v


def to_distribution(src: str, key: str, d: Any) -> od.BaseDistribution | list:
    """Optuna short form -> distribution; ``grid`` -> list of values."""
    d = _check_keys(src, key, d, DIST_KEYS)
    kind = d.get("type")
    allowed = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
               "categorical": {"type", "choices"}, "grid": {"type", "values"}}
    if kind not in allowed:
        raise _err(src, f"{key}.type", f"unknown distribution {kind!r} (valid: float, int, categorical, grid)")
    _check_keys(src, key, d, allowed[kind])
    try:
        if kind in ("float", "int"):
            for bound in ("low", "high"):
                if bound not in d:
                    raise KeyError(bound)
                v = d[bound]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind == "int" and not isinstance(v, int)):
                    raise _err(src, f"{key}.{bound}", f"{v!r} must be {'an integer' if kind == 'int' else 'a number'}")
            log = _bool(src, f"{key}.log", d.get("log", False))
            if kind == "float":
                step = d.get("step")
                if step is not None:
                    _number(src, f"{key}.step", step)
                return od.FloatDistribution(float(d["low"]), float(d["high"]), log=log, step=step)
            return od.IntDistribution(int(d["low"]), int(d["high"]), log=log,
                                      step=_int(src, f"{key}.step", d.get("step", 1), 1))
        values = d["choices" if kind == "categorical" else "values"]
        if not isinstance(values, list) or not values:
            raise ValueError(f"{'choices' if kind == 'categorical' else 'values'} must be a non-empty list, "
                             f"got {values!r}")
        return od.CategoricalDistribution(values) if kind == "categorical" else values
    except KeyError as e:
        raise _err(src, key, f"type {kind!r} needs {e.args[0]!r}") from None
    except (ValueError, TypeError) as e:
        if isinstance(e, SpaceError):
            raise
        raise _err(src, key, f"{e} (got {d!r})") from None


def _candidate_values(dist: od.BaseDistribution | list) -> list:
    """Values whose trainer configs must be valid: both bounds, or every choice."""
    if isinstance(dist, list):
        return list(dist)
    if isinstance(dist, od.CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]


def _check_overrides(overrides: dict[str, Any]) -> None:
    for k, v in overrides.items():
        if k not in OVERRIDE_KEYS:
            raise SpaceError(f"override {k!r}: unknown (valid: {', '.join(sorted(OVERRIDE_KEYS))})")
        low = 0 if k in ("cpu", "gpu", "threads", "max_concurrent") else 1
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < low:
            raise SpaceError(f"--{k.replace('_', '-')}: {v!r} must be >= {low}")


def _cpus_for_threads(src: str, threads: int, cpu: float, cpu_given: bool) -> float:
    """A trial's CPU reservation: at least its threads, so that trials x threads never exceeds the CPUs Ray offers.

    Threads beyond a reservation given next to them (both in the file, or --cpus-per-trial) are an error; a
    reservation that only comes from the file is raised to --threads.
    """
    if threads <= cpu:
        return cpu
    if cpu_given:
        raise _err(src, "resources.threads", f"{threads} threads per trial on {cpu:g} reserved CPU(s) would "
                   f"oversubscribe the cores; reserve at least {threads} (resources.cpu, --cpus-per-trial) or use "
                   f"fewer threads")
    return float(threads)


def parse_space(raw: Any, src: str = "<dict>", overrides: dict[str, Any] | None = None) -> SweepSpec:
    """Validate a parsed search space (see ``load_space``)."""
    raw = _check_keys(src, "", raw, TOP_KEYS)
    for key in ("pair", "methods", "objective", "budget"):
        if key not in raw:
            raise _err(src, key, "missing")
    overrides = overrides or {}
    _check_overrides(overrides)
    name = raw.get("name", Path(src).stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        raise _err(src, "name", f"{name!r} must be a plain name (letters, digits, '.', '_', '-'; no paths)")

    budget = _check_keys(src, "budget", raw["budget"], BUDGET_KEYS)
    steps = _int(src, "budget.steps", overrides.get("steps", budget.get("steps", 1000)), 1, MAX_STEPS)
    seeds = _int(src, "budget.seeds", overrides.get("seeds", budget.get("seeds", 1)), 1, 1000)
    eval_every = _int(src, "budget.eval_every", budget.get("eval_every", max(1, steps // 5)), 1, MAX_STEPS)
    eval_every = min(eval_every, steps)

    sched = _check_keys(src, "scheduler", raw.get("scheduler") or {"type": "asha"}, SCHEDULER_KEYS)
    if sched.get("type", "asha") not in ("asha", "fifo"):
        raise _err(src, "scheduler.type", f"unknown scheduler {sched.get('type')!r} (valid: asha, fifo)")
    sched = {"type": sched.get("type", "asha"),
             "grace_period": _int(src, "scheduler.grace_period", sched.get("grace_period", eval_every), 1),
             "reduction_factor": _int(src, "scheduler.reduction_factor", sched.get("reduction_factor", 2), 2),
             "also_rank_by": sched.get("also_rank_by") or []}
    if isinstance(sched["also_rank_by"], str):
        sched["also_rank_by"] = [sched["also_rank_by"]]
    if not isinstance(sched["also_rank_by"], list) or not all(isinstance(m, str) for m in sched["also_rank_by"]):
        raise _err(src, "scheduler.also_rank_by", f"{sched['also_rank_by']!r} must be a list of metric names")
    res = _check_keys(src, "resources", raw.get("resources") or {}, RESOURCE_KEYS)
    custom = res.get("custom") or {}
    if not isinstance(custom, dict):
        raise _err(src, "resources.custom", f"expected a mapping of resource name to amount, got {custom!r}")
    resources = {"cpu": _number(src, "resources.cpu", overrides.get("cpu", res.get("cpu", 1))),
                 "gpu": _number(src, "resources.gpu", overrides.get("gpu", res.get("gpu", 0))),
                 "max_concurrent": _int(src, "resources.max_concurrent",
                                        overrides.get("max_concurrent", res.get("max_concurrent", 0)), 0),
                 "custom": {str(k): _number(src, f"resources.custom.{k}", v) for k, v in custom.items()},
                 "max_failures": _int(src, "resources.max_failures", res.get("max_failures", 3), 0),
                 "threads": _int(src, "resources.threads", overrides.get("threads", res.get("threads", 0)), 0, 1024)}
    resources["cpu"] = _cpus_for_threads(src, resources["threads"], resources["cpu"],
                                         "cpu" in overrides or ("cpu" in res and "threads" not in overrides))
    if resources["cpu"] == 0 and resources["gpu"] == 0 and not resources["custom"]:
        raise _err(src, "resources", "a trial needs some resource (cpu > 0 or gpu > 0)")
    if resources["gpu"] > 1 and resources["gpu"] != int(resources["gpu"]):
        raise _err(src, "resources.gpu", f"{resources['gpu']!r}: more than one GPU must be a whole number")
    # everything above needs no data; the pair is built (and its data read) only now
    try:
        pair = PairSpec.from_dict(raw["pair"]).build()
    except (ValueError, TypeError, FileNotFoundError, ImportError) as e:  # DataError is a ValueError
        raise _err(src, "pair", str(e)) from None
    try:
        check_pair(pair)  # the pair's samplers and the whole evaluation on 8 samples: a broken pair fails here
    except ValueError as e:
        raise _err(src, "pair", str(e)) from None
    available = metric_names(pair)

    objectives = _parse_objectives(src, raw["objective"], available)

    methods_block = raw["methods"]
    if not isinstance(methods_block, dict) or not methods_block:
        raise _err(src, "methods", f"expected a mapping of {'/'.join(METHODS)} to settings")
    methods = tuple(_parse_method(src, m, b, overrides.get("samples"), pair) for m, b in methods_block.items())

    periodic = metric_names(pair, full=False)
    if sched["type"] == "asha" and len(objectives) == 1 and objectives[0].metric not in periodic:
        raise _err(src, "objective.metric", f"{objectives[0].metric!r} is computed only at the end of a trial; "
                   f"ASHA needs one of {sorted(periodic)} (or scheduler.type: fifo)")
    # 'bias' names the pair's headline bias
    sched["also_rank_by"] = [pair.headline().bias if m == "bias" else m for m in sched["also_rank_by"]]
    if sched["also_rank_by"] and len(objectives) > 1:
        raise _err(src, "scheduler.also_rank_by", "a multi-objective search keeps every member (no ASHA): leave it "
                   "out")
    sched["also_rank_by"] = [m for m in dict.fromkeys(sched["also_rank_by"]) if m != objectives[0].metric]
    for metric in sched["also_rank_by"]:
        if sched["type"] != "asha":
            raise _err(src, "scheduler.also_rank_by", "only ASHA ranks members (scheduler.type: asha)")
        if metric not in periodic:
            raise _err(src, "scheduler.also_rank_by", f"{metric!r} is not computed at periodic evaluations of this "
                       f"pair; valid: {sorted(periodic)}")

    for m in methods:
        device = resolve_config(pair, {**m.fixed, "method": m.method}).device
        if device.startswith("cuda") and resources["gpu"] == 0:
            raise _err(src, f"methods.{m.method}.fixed.device", f"{device!r} but resources.gpu is 0: the trial "
                       f"would get no GPU")

    from sweep.studies import check_sampler

    searched = {k: v for m in methods for k, v in m.search.items()}
    try:
        sampler = check_sampler(_check_keys(src, "sampler", raw.get("sampler") or {}, set(raw.get("sampler") or {})),
                                searched, len(objectives) > 1)
    except ValueError as e:
        raise _err(src, "sampler", str(e)) from None
    return SweepSpec(name, src, pair.spec().to_dict(), methods, objectives, steps, seeds,
                     eval_every, sched, resources, sampler, raw)


def _parse_objectives(src: str, block: Any, available: set[str]) -> tuple[Objective, ...]:
    items = block if isinstance(block, list) else [block]
    if not 1 <= len(items) <= 2:
        raise _err(src, "objective", f"one or two objectives, got {len(items)}")
    out = []
    for i, item in enumerate(items):
        key = "objective" if len(items) == 1 else f"objective[{i}]"
        item = _check_keys(src, key, item, {"metric", "mode"})
        metric = item.get("metric")
        if metric not in available:
            raise _err(src, f"{key}.metric", f"{metric!r} is not computed for this pair "
                       f"(available: {', '.join(sorted(available))})")
        mode = item.get("mode", metric_direction(metric))  # which way is better: the metric registry says
        if mode not in ("min", "max"):
            raise _err(src, f"{key}.mode", f"{mode!r} must be 'min' or 'max'")
        out.append(Objective(metric, mode))
    return tuple(out)


def _parse_method(src: str, method: str, block: Any, samples_override: int | None, pair) -> MethodSpec:
    where = f"methods.{method}"
    if method not in METHODS:
        raise _err(src, where, f"unknown method (valid: {', '.join(METHODS)})")
    block = _check_keys(src, where, block or {}, METHOD_KEYS)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    fixed = dict(_check_keys(src, f"{where}.fixed", block.get("fixed") or {}, fields | SWEEP_OWNED))
    search_raw = dict(_check_keys(src, f"{where}.search", block.get("search") or {}, fields | SWEEP_OWNED))
    for part, params in (("fixed", fixed), ("search", search_raw)):
        for k in params:
            if k in SWEEP_OWNED:
                raise _err(src, f"{where}.{part}.{k}", "is set by the sweep (budget block / seeds), not here")
            holder = owner(k)  # a method's own setting (its settings dataclass) belongs in that method's block
            if holder is not None and holder.name != method and get_method(method).Settings is not None:
                raise _err(src, f"{where}.{part}.{k}", f"this key belongs to method {holder.name!r} (settings of "
                           f"{method!r}: {', '.join(get_method(method).settings) or 'none'})")
    both = sorted(set(fixed) & set(search_raw))
    if both:
        raise _err(src, f"{where}.search.{both[0]}", "is both fixed and searched")
    dists = {k: to_distribution(src, f"{where}.search.{k}", v) for k, v in search_raw.items()}
    grid = {k: v for k, v in dists.items() if isinstance(v, list)}
    search = {k: v for k, v in dists.items() if not isinstance(v, list)}
    if grid and search:
        raise _err(src, f"{where}.search", "mixes grid and sampled parameters; use one kind per method")
    try:  # the fixed values must make a valid trainer config ...
        resolve_config(pair, {**fixed, "method": method})
    except ValueError as e:
        raise _err(src, f"{where}.fixed", str(e)) from None
    for k, dist in dists.items():  # ... and so must both bounds and every choice of each searched one
        for v in _candidate_values(dist):
            try:
                resolve_config(pair, {**fixed, k: v, "method": method})
            except (ValueError, TypeError) as e:
                raise _err(src, f"{where}.search.{k}", f"value {v!r} is not valid: {e}") from None
    samples = _int(src, f"{where}.samples", samples_override or block.get("samples", 1), 1, MAX_SAMPLES)
    bundle = _int(src, f"{where}.bundle", block.get("bundle", 1), 1, MAX_BUNDLE)
    if bundle > 1:
        varying = set(search) | set(grid)
        allowed = get_method(method).bundle_fields
        fixed_shape = sorted(varying - allowed)
        if fixed_shape:
            raise _err(src, f"{where}.bundle", f"members of a bundle share {fixed_shape[0]!r} (it changes shapes or "
                       f"the loop); search only {', '.join(sorted(allowed))} in a bundled method, or bundle: 1")
    return MethodSpec(method, samples, fixed, search, grid, bundle)


def ray_request(res: dict[str, Any]) -> dict[str, float]:
    """A trial's resources in Ray's names (CPU, GPU, custom ones), zero shares included."""
    return {"CPU": res["cpu"], "GPU": res["gpu"], **res["custom"]}


def check_resources_on_cluster(spec: SweepSpec, address: str | None = None, num_cpus: int | None = None) -> None:
    """A trial's resources must fit one node of the cluster (in-process: this machine), or nothing ever starts.

    With an autoscaling cluster (``address`` given and nodes can be added) a too-large request is a warning.
    """
    res = spec.resources
    if address is None:
        cpus = num_cpus or os.cpu_count() or 1
        try:
            import torch

            gpus = torch.cuda.device_count()
        except ImportError:
            gpus = 0
        nodes = [{"CPU": cpus, "GPU": gpus}]
        scalable = False
    else:
        import ray

        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        scalable = bool(os.environ.get("OTSR_CLUSTER_AUTOSCALES"))
    need = ray_request(res)
    if any(all(node.get(k, 0) >= v for k, v in need.items() if v) for node in nodes):
        return
    have = "; ".join(", ".join(f"{k}={v:g}" for k, v in sorted(n.items()) if not k.startswith("node:")
                               and not k.startswith("memory") and "object_store" not in k) for n in nodes)
    msg = (f"{spec.source}: resources: a trial asks for {', '.join(f'{k}={v:g}' for k, v in need.items() if v)} "
           f"but no node has that ({have})")
    if scalable:
        print(f"otsr-sweep: warning: {msg}; waiting for the autoscaler to add a node", flush=True)
        return
    raise SpaceError(msg)
