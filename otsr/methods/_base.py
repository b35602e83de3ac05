"""What a training method is: its networks' roles, its losses, its settings and which may vary in a bundle.

A method object owns one outer step of its adversarial game, written for K members at once (every tensor has a
leading member dimension, and every loss is one value per member). The loop, evaluation, checkpoints, the
console and MLflow know a method only through these declarations, so a third method is one new module.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar

import torch

if TYPE_CHECKING:
    from otsr.state import TrainState

# Settings every method may vary between members of a bundle: they change neither shapes nor the loop.
MEMBER_FIELDS = frozenset({"seed", "lr_map", "lr_critic"})


class Method(abc.ABC):
    """One training method (see the module docstring)."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for help texts
    losses: ClassVar[tuple[str, ...]]  # names of the values ``step`` returns per member, in order
    critic_is_potential: ClassVar[bool]  # second network: an OT potential (zero head, cost-scaled) or a GAN critic
    bundle_fields: ClassVar[frozenset[str]] = MEMBER_FIELDS  # settings that may differ inside one bundle
    settings: ClassVar[tuple[str, ...]] = ()  # TrainConfig fields only this method reads (others must keep defaults)
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

    def validate(self, cfg) -> None:
        """Raise ValueError naming the key when ``cfg`` sets something this method cannot use."""

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

    @abc.abstractmethod
    def step(self, s: TrainState) -> torch.Tensor:
        """One outer step of every member; returns the losses as a (K, len(losses)) device tensor (no host sync)."""


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add a method object to the registry under ``method.name`` (a later registration replaces it)."""
    if not isinstance(method, Method):
        raise TypeError(f"{method!r} is not an otsr Method")
    METHODS[method.name] = method
    return method


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
