"""Default training settings per kind of pair and size: what a user who changes nothing gets.

``TrainConfig``'s own defaults are the published reference setups for images (batch 64, lr 1e-4, 10 inner
steps); vector pairs, super-resolution and images up to 32 pixels a side (the CPU image recipe) get the settings
measured here (README "OTS at scale", "Images").
Anything the user sets wins; the resolved config is what runs, is logged and is stored in checkpoints.
"""

from __future__ import annotations

from typing import Any

from otsr.config import TrainConfig, check_bundle
from otsr.methods import get_method, owner
from otsr.pairs import Pair

CPU_IMAGE_SIDE = 32  # image pairs whose Q side is at most this get the CPU image recipe (one thread, minutes)
# Shared by SR and same-shape image pairs at that size: small nets, and a potential that learns 10x faster than the
# reference's 1e-4 (at 1e-4 it stayed flat for hundreds of updates: potential check, README "Images").
CPU_IMAGE_RECIPE = {"critic_width": 16, "lr_critic": 1e-3, "lr_schedule": "cosine"}


def vector_steps(dim: int, method: str = "gan") -> int:
    """Outer steps a vector pair of dimension ``dim`` needs with the vector recipe of ``method``."""
    return get_method(method).vector_steps(dim)


def recipe(pair: Pair, method: str) -> dict[str, Any]:
    """TrainConfig fields that differ from the defaults for ``pair`` and ``method`` (another method's own settings
    are left out: they are that method's)."""
    return _recipe_for(tuple(pair.shape), tuple(pair.shape_q), method)


def _recipe_for(shape: tuple[int, ...], shape_q: tuple[int, ...], method: str) -> dict[str, Any]:
    out = _shared_recipe(shape, shape_q, method)
    return {k: v for k, v in out.items() if owner(k) in (None, get_method(method))}


def _shared_recipe(shape: tuple[int, ...], shape_q: tuple[int, ...], method: str) -> dict[str, Any]:
    if len(shape) == 1:
        steps = vector_steps(shape[0], method)
        return {"batch_size": 1024, "lr_map": 1e-3, "lr_schedule": "cosine", "map_steps": 10,
                "critic_steps": 10, "steps": steps, "eval_every": steps // 10, "log_every": 100,
                "checkpoint_every": steps // 10, **get_method(method).recipe(shape[0])}
    small = max(shape_q[1:]) <= CPU_IMAGE_SIDE
    if shape != shape_q and small:  # the SR demo scale: README "Images"
        return {**CPU_IMAGE_RECIPE, "cost": "half_mean", "width": 16, "depth": 4, "batch_size": 16, "lr_map": 3e-4,
                "map_steps": 5, "potential_gain": 10.0, "critic_steps": 2, "steps": 600, "eval_every": 100,
                "checkpoint_every": 100, "eval_samples": 2048, "final_eval_samples": 4096}
    if shape != shape_q:  # unpaired SR: the AIM19 reference setup (EDSR 64 x 128, 15 map steps, 1/2 MSE)
        return {"batch_size": 8, "map_steps": 15, "critic_steps": 5, "cost": "half_mean", "width": 128, "depth": 64,
                "eval_every": 2000, "checkpoint_every": 2000, "eval_samples": 2048, "final_eval_samples": 4096}
    if small:  # same-shape image pairs at crop size (convex-images, degraded-images)
        return {**CPU_IMAGE_RECIPE, "width": 16, "depth": 2, "batch_size": 32, "map_steps": 3, "critic_steps": 3,
                "lr_map": 1e-3, "steps": 4000, "eval_every": 500, "checkpoint_every": 500}
    return {}


def resolve_config(pair: Pair, settings: dict[str, Any]) -> TrainConfig:
    """The config that runs: the pair's recipe for ``settings['method']`` overridden by ``settings``."""
    method = settings.get("method", TrainConfig.method)
    return TrainConfig.from_dict({**recipe(pair, method), **settings})


def resolve_members(pair: Pair, settings: dict[str, Any]) -> list[TrainConfig]:
    """The configs of a bundle: list values zip into members, scalars apply to all (see ``resolve_config``).

    Lists of unequal lengths are an error naming them; a setting the method may not vary inside a bundle is
    rejected by ``check_bundle`` naming the field.
    """
    lists = {k: list(v) for k, v in settings.items() if isinstance(v, (list, tuple))}
    lengths = {k: len(v) for k, v in lists.items()}
    if any(n == 0 for n in lengths.values()):
        raise ValueError(f"empty list for {', '.join(k for k, n in lengths.items() if n == 0)}")
    if len(set(lengths.values())) > 1:
        raise ValueError(f"list-valued settings must have equal lengths (they zip into members): {lengths}")
    k = next(iter(lengths.values()), 1)
    members = [resolve_config(pair, {**settings, **{key: v[i] for key, v in lists.items()}}) for i in range(k)]
    check_bundle(members)
    return members


def recipe_table() -> dict[str, dict[str, str]]:
    """What each pair kind gets for the fields its recipe sets: {field: {"vector pairs": "1024", ...}} (CLI help).
    Where a field varies with the dimension, its values are listed in the order D = 16 / 64 / 128, the default
    filled in where the recipe leaves it."""
    from otsr.methods import METHODS

    dims = (16, 64, 128)
    kinds = {"vector pairs": [((d,), (d,)) for d in dims], "SR pairs": [((3, 32, 32), (3, 128, 128))],
             "SR at HR <= 32": [((3, 8, 8), (3, 32, 32))], "images <= 32 px": [((3, 16, 16), (3, 16, 16))]}
    out: dict[str, dict[str, str]] = {}
    for kind, shapes in kinds.items():
        recipes = {name: [_recipe_for(shape, shape_q, name) for shape, shape_q in shapes] for name in METHODS}
        for key in sorted({k for rs in recipes.values() for r in rs for k in r}):
            per_method = {}
            for name, rs in recipes.items():
                if owner(key) not in (None, get_method(name)):
                    continue
                vals = [r.get(key, getattr(TrainConfig, key)) for r in rs]
                per_method[name] = _fmt(vals[0]) if len(set(vals)) == 1 else \
                    " / ".join(_fmt(v) for v in vals) + " by D = " + " / ".join(map(str, dims))
            if len(set(per_method.values())) == 1:
                out.setdefault(key, {})[kind] = next(iter(per_method.values()))
            else:
                out.setdefault(key, {})[kind] = ", ".join(f"{v} ({m})" for m, v in per_method.items())
    return out


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
