"""The Pair interface: what an OT problem is (source P, target Q, the true map when known)."""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, ClassVar

import torch


class NoTrueMapError(RuntimeError):
    """Raised when a metric needs the true OT map of a pair that does not know it (real unpaired data)."""


class Pair(abc.ABC):
    """Source P and target Q with (optionally) the true OT map T* from P to Q.

    A pair is fully reproduced by ``make_pair(pair.name, **pair.params())``. Samplers take an explicit
    ``torch.Generator`` on the target device, so training runs are seeded and resumable.
    Subclasses implement the abstract methods; nothing returns ``None`` by accident.
    """

    name: ClassVar[str]
    dim_range: ClassVar[tuple[int, int]] = (1, 1 << 20)

    @property
    @abc.abstractmethod
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(16,)`` or ``(3, 32, 32)``."""

    @property
    def shape_q(self) -> tuple[int, ...]:
        """Shape of one sample of Q: the same as P's except for super-resolution pairs (larger images)."""
        return tuple(self.shape)

    @abc.abstractmethod
    def sample_p(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` samples of P, shape ``(n, *shape)``, on ``generator.device``."""

    @abc.abstractmethod
    def sample_q(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` samples of Q drawn independently of P, shape ``(n, *shape_q)``."""

    def sample_with_target(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples x of P with their images T*(x); raises NoTrueMapError when T* is unknown."""
        raise NoTrueMapError(f"pair {self.name!r} has no known OT map")

    @property
    def has_true_map(self) -> bool:
        """Whether ``sample_with_target`` works, i.e. L2-UVP and cos can be computed."""
        return type(self).sample_with_target is not Pair.sample_with_target

    @abc.abstractmethod
    def var_q(self) -> float:
        """Var(Q) = trace of the covariance of Q (the L2-UVP normaliser)."""

    def params(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this pair exactly (dataclass fields by default)."""
        if dataclasses.is_dataclass(self):
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        raise NotImplementedError(f"{type(self).__name__} must implement params()")

    def check_dim(self, dim: int, key: str = "dim") -> None:
        """Raise ValueError when the dimension parameter ``key`` is outside this pair's supported range."""
        lo, hi = self.dim_range
        if isinstance(dim, bool) or not isinstance(dim, int) or not lo <= dim <= hi:
            raise ValueError(f"pair {self.name!r}: {key}={dim!r} is outside its range [{lo}, {hi}]")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{self.name}({args})"


def cached_to(cache: dict, key: str, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy of a pair's fixed tensor on ``device``, made once per device."""
    k = (key, str(device))
    if k not in cache:
        cache[k] = tensor.to(device)
    return cache[k]


def validate_pair(pair: Pair, device: torch.device | str = "cpu") -> None:
    """Check that a (possibly user-written) pair returns samples of its declared shape; raise ValueError."""
    g = torch.Generator(device=device).manual_seed(0)
    for what, fn, shape in (("sample_p", pair.sample_p, tuple(pair.shape)),
                            ("sample_q", pair.sample_q, tuple(pair.shape_q))):
        out = fn(3, g)
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"pair {pair!r}: {what}(3) returned {type(out).__name__}, not a tensor")
        if tuple(out.shape) != (3, *shape):
            raise ValueError(
                f"pair {pair!r}: {what}(3) returned shape {tuple(out.shape)}, expected {(3, *shape)}"
            )
        if not torch.isfinite(out).all():
            raise ValueError(f"pair {pair!r}: {what} returned non-finite values")
    if pair.has_true_map:
        x, y = pair.sample_with_target(3, g)
        if tuple(x.shape) != (3, *pair.shape) or tuple(y.shape) != (3, *pair.shape_q):
            raise ValueError(
                f"pair {pair!r}: sample_with_target(3) returned shapes {tuple(x.shape)}, {tuple(y.shape)}"
            )
    v = float(pair.var_q())
    if not v > 0:
        raise ValueError(f"pair {pair!r}: var_q() = {v}, must be > 0")
