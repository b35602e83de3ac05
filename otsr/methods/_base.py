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

    def validate(self, cfg) -> None:
        """Raise ValueError naming the key when ``cfg`` sets something this method cannot use."""

    def inner_updates(self, cfg) -> int:
        """Network updates per outer step (for throughput figures)."""
        return 1

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


def get_method(name: str) -> Method:
    """The method registered under ``name``; unknown names raise listing the valid ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]
