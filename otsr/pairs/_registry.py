"""Pairs by name: ``make_pair('gaussian-shift', dim=16)``; unknown names raise listing the valid ones."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from otsr.pairs._base import Pair
from otsr.pairs._convex import ConvexMixture
from otsr.pairs._gaussian import Gaussian, GaussianShift
from otsr.pairs._images import DegradedImages
from otsr.sr.pair import UnpairedSR

PAIRS: dict[str, type[Pair]] = {cls.name: cls for cls in (GaussianShift, Gaussian, ConvexMixture, DegradedImages,
                                                          UnpairedSR)}


def register_pair(cls: type[Pair]) -> type[Pair]:
    """Class decorator that adds a user pair to the registry under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Pair)):
        raise TypeError(f"{cls!r} is not a subclass of otsr.Pair")
    PAIRS[cls.name] = cls
    return cls


def pair_class(name: str) -> type[Pair]:
    """The class registered under ``name``."""
    if name not in PAIRS:
        raise ValueError(f"unknown pair {name!r}; valid pairs: {', '.join(sorted(PAIRS))}")
    return PAIRS[name]


def pair_parameters(name: str) -> dict[str, Any]:
    """Parameter names and defaults of a registered pair."""
    cls = pair_class(name)
    if dataclasses.is_dataclass(cls):
        return {f.name: f.default for f in dataclasses.fields(cls) if f.init}
    sig = inspect.signature(cls)
    return {k: (None if p.default is p.empty else p.default) for k, p in sig.parameters.items()}


def make_pair(name: str, **params: Any) -> Pair:
    """Build a registered pair; unknown parameters raise naming the pair and the valid parameters."""
    cls = pair_class(name)
    valid = pair_parameters(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"pair {name!r}: unknown parameter(s) {unknown}; valid: {sorted(valid)}")
    return cls(**params)
