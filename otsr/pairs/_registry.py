"""Pairs by name: ``make_pair('gaussian-shift', dim=16)`` or by import path ``make_pair('mypkg.pairs:Stretch')``;
unknown names raise listing the valid ones."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
from typing import Any

from otsr.pairs._base import Pair, use_registry
from otsr.pairs._convex import ConvexMixture
from otsr.pairs._convex_images import ConvexImages
from otsr.pairs._gaussian import Gaussian, GaussianShift
from otsr.pairs._icnn import ICNNMixture
from otsr.pairs._images import DegradedImages

PAIRS: dict[str, type[Pair]] = {cls.name: cls for cls in (GaussianShift, Gaussian, ConvexMixture, ICNNMixture,
                                                            DegradedImages, ConvexImages)}
# Built-in pairs that live in other packages, imported on first use (no import cycle with otsr.sr).
LAZY_PAIRS = {"sr-folders": "otsr.sr.pair:UnpairedSR"}


def register_pair(cls: type[Pair]) -> type[Pair]:
    """Class decorator that adds a user pair to the registry under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Pair)):
        raise TypeError(f"{cls!r} is not a subclass of otsr.Pair")
    PAIRS[cls.name] = cls
    return cls


def pair_names() -> list[str]:
    """Every registered pair name, built-in and user, sorted."""
    return sorted(set(PAIRS) | set(LAZY_PAIRS))


def _import_class(path: str) -> type[Pair]:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"pair {path!r}: cannot import module {module_name!r} ({e})") from None
    cls = module
    for part in attr.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            raise ValueError(f"pair {path!r}: module {module_name!r} has no attribute {attr!r}")
    if not (isinstance(cls, type) and issubclass(cls, Pair)):
        raise ValueError(f"pair {path!r} is not a subclass of otsr.Pair")
    return cls


def pair_class(name: str) -> type[Pair]:
    """The class registered under ``name``, or the class at import path ``module:Class``."""
    if name in PAIRS:
        return PAIRS[name]
    if name in LAZY_PAIRS:
        return register_pair(_import_class(LAZY_PAIRS[name]))
    if ":" in name:
        return _import_class(name)
    raise ValueError(f"unknown pair {name!r}; valid pairs: {', '.join(pair_names())}, or a user pair as "
                     f"'module:Class'")


def spec_name(cls: type[Pair]) -> str:
    """How specs name a pair class: its registry name when registered, else its import path."""
    registered = PAIRS.get(getattr(cls, "name", None))
    if registered is cls or LAZY_PAIRS.get(getattr(cls, "name", None)) == f"{cls.__module__}:{cls.__qualname__}":
        return cls.name
    return f"{cls.__module__}:{cls.__qualname__}"


def pair_parameters(name: str) -> dict[str, Any]:
    """Parameter names and defaults of a pair (registry name or import path)."""
    cls = pair_class(name)
    if dataclasses.is_dataclass(cls):
        return {f.name: f.default for f in dataclasses.fields(cls) if f.init}
    sig = inspect.signature(cls)
    return {k: (None if p.default is p.empty else p.default) for k, p in sig.parameters.items()}


def make_pair(name: str, **params: Any) -> Pair:
    """Build a pair; unknown parameters raise naming the pair and the valid parameters."""
    cls = pair_class(name)
    valid = pair_parameters(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"pair {name!r}: unknown parameter(s) {unknown}; valid: {sorted(valid)}")
    return cls(**params)


use_registry(sys.modules[__name__])  # PairSpec.build and Pair.spec resolve names through this module
