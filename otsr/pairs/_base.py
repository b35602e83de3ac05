"""The Pair contract: what an OT problem is (source P, target Q, the true map when known), and every hook
that evaluation, figures and reports may call, each with a default."""

from __future__ import annotations

import abc
import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from otsr.features import DETAIL, feature_spaces
from otsr.metric_registry import Headline, metric_role

VAR_SAMPLES = 1 << 14  # samples of Q behind the default Var(Q) estimate
VAR_SEED = 2**31 - 5


@dataclasses.dataclass(frozen=True)
class SampleMetric:
    """A per-sample metric: the mean over evaluation samples of ``fn(x, T(x))``, a (n,) tensor per chunk."""

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class FeatureMetric:
    """The Fréchet distance between T#P and Q in a feature space, at the final evaluation; ``build(device)``
    returns the feature function (e.g. an Inception network loaded from a local file)."""

    name: str
    build: Callable[[torch.device], Callable[[torch.Tensor], torch.Tensor]]


@dataclasses.dataclass(frozen=True)
class ValidationMetrics:
    """Metrics on the pair's own validation data (e.g. paired SR images): ``fn(t, device, limit)`` returns exactly
    ``names``; ``limit`` > 0 caps the validation items (the pre-training check uses 1)."""

    names: tuple[str, ...]
    fn: Callable[..., dict[str, float]]


PairMetric = SampleMetric | FeatureMetric | ValidationMetrics


class NoTrueMapError(RuntimeError):
    """Raised when a metric needs the true OT map of a pair that does not know it (real unpaired data)."""


class Pair(abc.ABC):
    """Source P and target Q with (optionally) the true OT map T* from P to Q.

    A pair is fully reproduced by ``pair.spec().build()``. Samplers take an explicit ``torch.Generator`` on the
    target device, so training runs are seeded and resumable. Samplers and ``sample_with_target`` may use
    autograd (e.g. T* = grad psi of a network): evaluation calls them with gradients enabled and detaches.

    Subclasses implement the abstract members; the hooks below them have defaults and are overridden by pairs
    that know more (a learned-shift metric, a validation set, their own figure).
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

    def var_q(self) -> float:
        """Var(Q) = trace of the covariance of Q (the L2-UVP normaliser); by default estimated once from
        VAR_SAMPLES samples of Q drawn with a fixed seed (override with the exact value when it is known)."""
        if getattr(self, "_var_q_estimate", None) is None:
            with torch.enable_grad():  # samplers may need autograd
                y = self.sample_q(VAR_SAMPLES, torch.Generator().manual_seed(VAR_SEED)).detach().flatten(1).double()
            self._var_q_estimate = float((y - y.mean(0)).pow(2).sum(1).mean())
        return self._var_q_estimate

    def sample_with_target(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples x of P with their images T*(x); raises NoTrueMapError when T* is unknown."""
        raise NoTrueMapError(f"pair {self.name!r} has no known OT map")

    @property
    def has_true_map(self) -> bool:
        """Whether ``sample_with_target`` works, i.e. L2-UVP and cos can be computed."""
        return type(self).sample_with_target is not Pair.sample_with_target

    def params(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this pair exactly (dataclass fields by default)."""
        if dataclasses.is_dataclass(self):
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        raise NotImplementedError(f"{type(self).__name__} must implement params()")

    def spec(self) -> PairSpec:
        """The pair's identity: registry name (or import path) and parameters; ``spec().build()`` rebuilds it."""
        return PairSpec(_REGISTRY.spec_name(type(self)), self.params())

    # --- evaluation hooks (defaults: nothing extra) ---

    def metrics(self) -> list[PairMetric]:
        """The pair's own metrics, each declared once with its name and function (``SampleMetric``,
        ``FeatureMetric``, ``ValidationMetrics``); names are registered in ``otsr.metric_registry``. Cheap: builds
        no network (feature metrics build theirs when the final evaluation asks)."""
        return []

    def evaluation_samples(self, seed: int) -> contextlib.AbstractContextManager:
        """A context in which the samplers draw the same evaluation samples for the same ``seed``.

        Pairs that sample from the generator need nothing (evaluation seeds it); pairs with their own sample
        streams (image folders read by workers) switch to a fixed evaluation stream, so periodic evaluations
        compare maps on the same crops instead of adding sampling noise to the curve.
        """
        return contextlib.nullcontext()

    def content_reference(self, n: int, generator: torch.Generator) -> torch.Tensor | None:
        """``n`` samples shaped like Q that carry P's content (e.g. the HR originals of an SR dataset's LR pool), when
        the data has them: their bias to Q is the content floor, below which no map can go. None by default."""
        return None

    def headline(self) -> Headline:
        """The metrics a comparison on this pair is read by (the report's panels, the MLflow views, ``otsr
        train``'s summary, the benchmarks). By default, from the pair's feature spaces: the bias is the view that
        sees fine detail when the samples have one (high-pass patches of images), else sliced W2 (every pair has
        it, at every evaluation); the accuracy is L2-UVP when T* is known, else the pair's first own metric with
        the accuracy role (PSNR on paired SR images)."""
        bias = DETAIL if DETAIL in feature_spaces(tuple(self.shape_q)) else "bias_sliced_w2"
        own = [n for m in self.metrics() for n in (m.names if isinstance(m, ValidationMetrics) else (m.name,))]
        accuracy = "l2_uvp" if self.has_true_map else next((n for n in own if metric_role(n) == "accuracy"), None)
        return Headline(bias=bias, accuracy=accuracy)

    def metric_notes(self) -> dict[str, str]:
        """Metrics this pair cannot compute, each with the reason (reported, never faked)."""
        return {} if self.has_true_map else {"l2_uvp": "unavailable: this pair has no known OT map"}

    def figure(self, t, device: torch.device) -> torch.Tensor | None:
        """A (3, H, W) uint8 picture of the map, or None for the generic scatter / image grid."""
        return None

    def check_dim(self, dim: int, key: str = "dim") -> None:
        """Raise ValueError when the dimension parameter ``key`` is outside this pair's supported range."""
        lo, hi = self.dim_range
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise ValueError(f"pair {self.name!r}: {key}={dim!r} is not an integer")
        if not lo <= dim <= hi:
            raise ValueError(f"pair {self.name!r}: {key}={dim!r} is outside its range [{lo}, {hi}]")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{self.name}({args})"


class PushforwardPair(Pair):
    """Q = T*#P for a known map T* (the gradient of a convex function: then T* is the OT map, by Brenier's
    theorem): subclasses give ``sample_p`` and ``true_map``; Q is drawn by pushing fresh P samples forward."""

    @abc.abstractmethod
    def true_map(self, x: torch.Tensor) -> torch.Tensor:
        """T*(x) for a batch of P samples (may use autograd)."""

    def sample_q(self, n, generator):
        """T* of fresh P samples (independent of any sample_p call)."""
        return self.true_map(self.sample_p(n, generator))

    def sample_with_target(self, n, generator):
        """x ~ P and T*(x)."""
        x = self.sample_p(n, generator)
        return x, self.true_map(x)


@dataclasses.dataclass(frozen=True)
class PairSpec:
    """A pair by name (registry name or ``module:Class`` import path) and constructor parameters."""

    name: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    def build(self) -> Pair:
        """Construct the pair (unknown names and parameters raise, naming them)."""
        return _REGISTRY.make_pair(self.name, **self.params)

    def to_dict(self) -> dict[str, Any]:
        """Plain ``{"name": ..., "params": {...}}`` for JSON, YAML, checkpoints and Tune configs."""
        return {"name": self.name, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: Any, where: str = "pair") -> PairSpec:
        """Read ``{"name": ..., "params": {...}}``; a malformed spec raises naming ``where``."""
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise ValueError(f"{where}: expected {{name: ..., params: {{...}}}}, got {d!r}")
        unknown = sorted(set(d) - {"name", "params"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown} (valid: name, params)")
        params = d.get("params") or {}
        if not isinstance(params, dict):
            raise ValueError(f"{where}.params: expected a mapping, got {params!r}")
        return cls(d["name"], dict(params))

    def describe(self) -> str:
        """``name(k=v, ...)`` for logs and reports."""
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"


class _Unset:
    """Stands in until ``otsr.pairs._registry`` installs itself (it imports this module, not the reverse)."""

    def __getattr__(self, name):
        raise RuntimeError("the pair registry is not loaded; import otsr.pairs")


_REGISTRY = _Unset()


def use_registry(registry) -> None:
    """Install the object that resolves names to pair classes (``make_pair``, ``spec_name``): the registry module."""
    global _REGISTRY
    _REGISTRY = registry


def cached_to(cache: dict, key: str, tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy of a pair's fixed tensor on ``device``, made once per device."""
    k = (key, str(device))
    if k not in cache:
        cache[k] = tensor.to(device)
    return cache[k]
