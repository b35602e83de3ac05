"""What a training method is: its networks' roles, its losses, its settings and which may vary in a bundle.

A method object owns one outer step of its adversarial game, written for K members at once (every tensor has a
leading member dimension, and every loss is one value per member). The loop, evaluation, checkpoints, the
console and MLflow know a method only through these declarations, so a third method is one new module.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from otsr.state import TrainState

# Settings every method may vary between members of a bundle: they change neither shapes nor the loop.
MEMBER_FIELDS = frozenset({"seed", "lr_map", "lr_critic"})


def comment_help(cls: type) -> dict[str, str]:
    """Each dataclass field's meaning, read from the comment beside its default (continued on comment lines)."""
    out: dict[str, str] = {}
    last = None
    names = {f.name for f in dataclasses.fields(cls)}
    for line in inspect.getsource(cls).splitlines():
        code, _, comment = line.partition("#")
        name = code.split(":", 1)[0].strip()
        if name in names and ":" in code and "=" in code:
            last = name
            out[name] = comment.strip()
        elif last and not code.strip() and comment:  # a comment line continues the field above
            out[last] += " " + comment.strip()
        else:
            last = None if code.strip() else last
    return out


def check_number(key: str, v: Any, low: float | None = None, strict: bool = False) -> None:
    """Raise ValueError naming ``key`` unless ``v`` is a finite number (>= ``low``, or > it when ``strict``)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"config key {key!r}: {v!r} is not a finite number")
    if low is not None and (v <= low if strict else v < low):
        raise ValueError(f"config key {key!r}: {v} must be {'>' if strict else '>='} {low:g}")


def check_count(key: str, v: Any) -> None:
    """Raise ValueError naming ``key`` unless ``v`` is a positive integer."""
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"config key {key!r}: {v!r} must be a positive integer")


class Method(abc.ABC):
    """One training method (see the module docstring)."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for help texts
    losses: ClassVar[tuple[str, ...]]  # names of the values ``step`` returns per member, in order
    critic_is_potential: ClassVar[bool]  # second network: an OT potential (zero head, cost-scaled) or a GAN critic
    # The method's own settings: a frozen dataclass (a comment per default is its help; ``BUNDLE``, a ClassVar, names
    # those that may differ inside one bundle; ``__post_init__`` validates). Configs keep them as flat keys; another
    # method's config must leave them at their defaults. None: the method declares none (nothing is checked for it).
    Settings: ClassVar[type | None] = None
    warm_start: ClassVar[str] = "identity"  # what warm_start 'auto' means for vector pairs: 'bures' or 'identity'
    # Its role in a comparison: a swept method is judged along its knob ``swept`` (a setting; shown as
    # ``swept_symbol``) against the reference methods, which have no such knob (the report, tracking, the MLflow
    # views and the benchmarks read these, never a method's name).
    swept: ClassVar[str | None] = None
    swept_symbol: ClassVar[str] = ""  # e.g. 'λ' (default: the setting's name)
    reference: ClassVar[bool] = False
    title: ClassVar[str] = ""  # its name in reports and tables (default: the name in capitals)
    tiny: ClassVar[dict] = {}  # settings that make a seconds-sized test run (``otsr.testing.tiny_config``)

    def label(self, settings=None) -> str:
        """``GAN`` or, given settings (a config or a dict), ``GAN λ=0.1``: what reports and titles call it."""
        text = self.title or self.name.upper()
        if self.swept and settings is not None:
            v = settings.get(self.swept) if isinstance(settings, dict) else getattr(settings, self.swept, None)
            if isinstance(v, (int, float)):
                text += f" {self.symbol}={v:g}"
        return text

    @property
    def symbol(self) -> str:
        """How the swept knob is written (``λ``)."""
        return self.swept_symbol or str(self.swept)

    @property
    def settings(self) -> tuple[str, ...]:
        """The names of the method's own settings (config keys only this method reads)."""
        return tuple(f.name for f in dataclasses.fields(self.Settings)) if self.Settings else ()

    @property
    def bundle_fields(self) -> frozenset[str]:
        """Settings that may differ inside one bundle: the shared MEMBER_FIELDS and the method's ``BUNDLE``."""
        return MEMBER_FIELDS | frozenset(getattr(self.Settings, "BUNDLE", ()))

    def settings_of(self, cfg) -> Any:
        """The method's settings read from a config's flat keys (validated by the settings dataclass)."""
        return self.Settings(**{k: getattr(cfg, k) for k in self.settings}) if self.Settings else None

    def validate(self, cfg) -> None:
        """Raise ValueError naming the key when ``cfg`` sets something this method cannot use: its own settings
        are checked by its settings dataclass, and another method's settings must keep their defaults."""
        self.settings_of(cfg)
        if self.Settings is None:
            return
        for other in METHODS.values():
            if other is self or other.Settings is None:
                continue
            for f in dataclasses.fields(other.Settings):
                v = getattr(cfg, f.name, f.default)
                if f.name not in self.settings and v != f.default:
                    what = getattr(other.Settings, "WHAT", {}).get(f.name, f.name)
                    raise ValueError(f"config key {f.name!r}: this key belongs to method {other.name!r}; method "
                                     f"{self.name!r} has no {what} (got {f.name}={v!r}; what may differ for "
                                     f"{self.name!r}: its own {', '.join(self.settings) or 'nothing'} and the shared "
                                     f"settings); use method {other.name!r}")

    def inner_updates(self, cfg) -> int:
        """Network updates per outer step (for throughput figures)."""
        return 1

    def vector_steps(self, dim: int) -> int:
        """Outer steps of the vector recipe at dimension ``dim``."""
        return 2000 if dim <= 16 else 6000 if dim <= 64 else 10000

    def recipe(self, dim: int | None) -> dict:
        """Settings this method changes in the default recipe (``otsr.recipes``) of a vector pair of dimension
        ``dim`` (None: an image pair)."""
        return {}

    def check_pair(self, cfg, pair) -> None:
        """Raise ValueError naming the key when ``cfg``'s settings cannot run on ``pair`` (before any work)."""

    @abc.abstractmethod
    def step(self, s: TrainState) -> torch.Tensor:
        """One outer step of every member; returns the losses as a (K, len(losses)) device tensor (no host sync)."""

    def finish(self, s: TrainState) -> str | None:
        """Work after the last step, before the final evaluation (the selected state is in place); returns what it
        did, for the run's message, or None."""
        return None


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add a method object to the registry under ``method.name`` (a later registration replaces it)."""
    if not isinstance(method, Method):
        raise TypeError(f"{method!r} is not an otsr Method")
    METHODS[method.name] = method
    return method


def owner(key: str) -> Method | None:
    """The registered method whose settings hold ``key`` (None for a shared setting)."""
    return next((m for m in METHODS.values() if key in m.settings), None)


def swept_methods() -> list[Method]:
    """Registered methods judged along a knob, in registration order."""
    return [m for m in METHODS.values() if m.swept]


def reference_methods() -> list[Method]:
    """Registered reference methods (what the swept ones are compared against), in registration order."""
    return [m for m in METHODS.values() if m.reference]


def comparison_methods() -> list[Method]:
    """The reference methods, then the swept ones: the order of a comparison's rows."""
    return reference_methods() + swept_methods()


def get_method(name: str) -> Method:
    """The method registered under ``name``; unknown names raise listing the valid ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]
