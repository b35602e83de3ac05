"""Evaluate learned maps on a pair, streaming: accuracy against T* (when known) and bias of T#P against Q.

Samples pass through the maps in chunks whose size is set by the sample size, and each metric keeps only what
it needs (running sums, moments for the Fréchet distances, projections for sliced W2, the first 512 samples for
OT-consistency), so memory is flat in the number of evaluation samples: 16,384 HR crops of 128 px cost what
a few dozen do. A bundle's K maps are evaluated in one pass on the same samples (``evaluate_members``): the
members are compared on the same data, and Q's side of every metric is computed once.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from otsr import metrics
from otsr.costs import cost as cost_fn
from otsr.features import feature_spaces as shape_feature_spaces
from otsr.pairs import FeatureMetric, Pair, SampleMetric, ValidationMetrics
from otsr.sampling import draw, draw_q, var_q

EVAL_SEED = 2**31 - 1  # evaluation samples are the same at every evaluation and independent of training
OT_CONSISTENCY_SAMPLES = 512
CHUNK_ELEMENTS = 1 << 21  # elements of one chunk of the larger sample shape (8 MiB in fp32)
N_PROJECTIONS = 128
CHANGE_ELEMENTS = 1 << 22  # outputs kept between evaluations for ``map_change`` (16 MiB per member)
CHANGE_SAMPLES = 512


def release_freed_memory() -> None:
    """Hand memory freed by the last chunk back to the OS (glibc's malloc_trim; a no-op elsewhere).

    Without it the peak RSS of a large-sample evaluation is bimodal: glibc raises its mmap threshold after large
    frees, later chunks come from the fragmented heap, and the same 4,096-crop SR evaluation peaked at 2.3 or 5 GiB
    from run to run (measured; 2.1 GiB every time with the threshold pinned, and with this trim).
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc():
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None


_LIBC = _libc()


def chunk_size(pair: Pair, n: int) -> int:
    """Samples per chunk: about CHUNK_ELEMENTS numbers of the larger sample, at most ``n`` and 4096."""
    per = max(math.prod(pair.shape), math.prod(pair.shape_q))
    return max(1, min(n, 4096, CHUNK_ELEMENTS // per))


def feature_spaces(pair: Pair) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The generic Fréchet bias views of a pair (``otsr.features``): raw samples when small; for larger images,
    16x16-pooled images and full-resolution high-pass patches."""
    return shape_feature_spaces(tuple(pair.shape_q))


BUILT_IN = ("transport_cost", "bias_mean_shift", "bias_sliced_w2")  # every pair
WITH_TRUE_MAP = ("l2_uvp", "cos")  # pairs that know T*
FINAL_ONLY = ("ot_consistency",)  # the final evaluation only


def metric_names(pair: Pair, full: bool = True) -> set[str]:
    """The names ``evaluate`` reports for ``pair`` (without evaluating anything): the built-in ones, the generic
    feature spaces, and the pair's own declarations (``Pair.metrics``)."""
    names = set(BUILT_IN) | set(feature_spaces(pair)) | (set(WITH_TRUE_MAP) if pair.has_true_map else set())
    for m in pair.metrics():
        if isinstance(m, SampleMetric):
            names.add(m.name)
        elif isinstance(m, ValidationMetrics):
            names |= set(m.names)
        elif full:
            names.add(m.name)
    return names | (set(FINAL_ONLY) if full else set())


class _TargetSide:
    """What every member's metrics compare against, accumulated once per evaluation: Q's samples."""

    def __init__(self, theta: torch.Tensor, features: dict, sample_metrics: list):
        self.mean = metrics.Moments(False)
        self.sample_metrics = sample_metrics
        self.theta, self.features = theta, features
        self.proj: list[torch.Tensor] = []
        self.moments = {k: metrics.Moments() for k in features}
        self._sorted: torch.Tensor | None = None

    def sorted_projections(self) -> torch.Tensor:
        """Q's projections sorted once, shared by every member's sliced W2."""
        if self._sorted is None:
            self._sorted = metrics.sort_projections(torch.cat(self.proj))
        return self._sorted

    def update(self, y: torch.Tensor) -> None:
        self.mean.update(y)
        self.proj.append(y.flatten(1).double() @ self.theta)
        for name, fn in self.features.items():
            self.moments[name].update(fn(y))


class _MapSide:
    """Running state of every streaming metric of one map in one evaluation."""

    def __init__(self, pair: Pair, cost: str, full: bool, target: _TargetSide):
        self.pair, self.cost, self.full, self.target = pair, cost, full, target
        self.n = 0
        self.transport = 0.0
        self.displacements = metrics.Displacements()
        self.extra: dict[str, float] = {}
        self.mean = metrics.Moments(False)
        self.proj: list[torch.Tensor] = []
        self.moments = {k: metrics.Moments() for k in target.features}
        self.ot_x: list[torch.Tensor] = []
        self.ot_tx: list[torch.Tensor] = []

    def update(self, x: torch.Tensor, tx: torch.Tensor, t_star: torch.Tensor | None) -> None:
        k = x.shape[0]
        self.n += k
        self.transport += float(cost_fn(self.cost, x, tx).double().sum())
        self.mean.update(tx)
        self.proj.append(tx.flatten(1).double() @ self.target.theta)
        if t_star is not None:
            self.displacements.update(x, tx, t_star)
        for m in self.target.sample_metrics:
            self.extra[m.name] = self.extra.get(m.name, 0.0) + float(m.fn(x, tx).double().sum())
        for name, fn in self.target.features.items():
            self.moments[name].update(fn(tx))
        if self.full:
            have = sum(len(t) for t in self.ot_x)
            if have < OT_CONSISTENCY_SAMPLES:
                self.ot_x.append(x[: OT_CONSISTENCY_SAMPLES - have])
                self.ot_tx.append(tx[: OT_CONSISTENCY_SAMPLES - have])

    def result(self, has_target: bool) -> dict[str, float]:
        n, tgt = self.n, self.target
        out = {"transport_cost": self.transport / n,
               "bias_mean_shift": metrics.mean_shift_from_moments(self.mean, tgt.mean),
               "bias_sliced_w2": metrics.sliced_from_projections(torch.cat(self.proj), tgt.sorted_projections(),
                                                                 presorted_b=True)}
        if has_target:
            out["l2_uvp"] = self.displacements.l2_uvp(var_q(self.pair))
            out["cos"] = self.displacements.cos()
        out.update({name: total / n for name, total in self.extra.items()})
        for name, m_tx in self.moments.items():
            out[name] = metrics.frechet_from_moments(m_tx, tgt.moments[name]) if n >= 2 else math.nan
        if self.full:
            out["ot_consistency"] = metrics.ot_consistency(torch.cat(self.ot_x), torch.cat(self.ot_tx), self.cost)
        return out


@torch.no_grad()
def evaluate_members(maps: Callable[[torch.Tensor], torch.Tensor], pair: Pair, *, n: int, cost: str,
                     members: list[int], device: torch.device | str = "cpu", full: bool = True,
                     seed: int = EVAL_SEED, chunk: int = 0, validation_limit: int = 0,
                     validate: bool = True) -> list[dict[str, float]]:
    """Metrics of the bundle members ``members`` on ``n`` fresh samples; ``maps`` takes a batch (B, ...) of P and
    returns every member's images (K, B, ...). One pass: the members see the same samples. See ``evaluate``."""
    if n < 2:
        raise ValueError(f"evaluate: n={n} samples; need at least 2")
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(seed)
    declared = pair.metrics()
    features = {**feature_spaces(pair), **({m.name: m.build(device) for m in declared
                                            if isinstance(m, FeatureMetric)} if full else {})}
    target = _TargetSide(metrics.projection_directions(math.prod(pair.shape_q), N_PROJECTIONS, 0, device), features,
                         [m for m in declared if isinstance(m, SampleMetric)])
    sides = [_MapSide(pair, cost, full, target) for _ in members]
    step = chunk or chunk_size(pair, n)
    with pair.evaluation_samples(seed):
        for start in range(0, n, step):
            k = min(step, n - start)
            x, t_star = draw(pair, k, g, pair.has_true_map)
            y = draw_q(pair, k, g)
            out = maps(x).detach()
            target.update(y)
            for side, m in zip(sides, members):
                side.update(x, out[m], t_star)
            del x, y, out, t_star
            release_freed_memory()
    results = [side.result(pair.has_true_map) for side in sides]
    for v in (m for m in declared if isinstance(m, ValidationMetrics) and validate):
        for res, member in zip(results, members):
            got = v.fn(lambda z, member=member: maps(z)[member], device, validation_limit)
            if set(got) != set(v.names):
                raise ValueError(f"pair {pair!r}: its validation metrics returned {sorted(got)}, declared "
                                 f"{sorted(v.names)}")
            res.update(got)
    return results


def evaluate(t: Callable[[torch.Tensor], torch.Tensor], pair: Pair, *, n: int, cost: str,
             device: torch.device | str = "cpu", full: bool = True, seed: int = EVAL_SEED, chunk: int = 0,
             validation_limit: int = 0, validate: bool = True) -> dict[str, float]:
    """Metrics of the map ``t`` (a batch (B, ...) of P -> its images) on ``n`` fresh samples, streamed in chunks.

    Always: transport cost E c(x, T(x)); bias of T#P vs Q as mean shift, sliced W2 and Fréchet distance (raw
    samples up to 1024 coordinates; for larger images 16x16-pooled images and full-resolution high-pass patches);
    L2-UVP and cos when the pair knows T*; the pair's own sample and validation metrics (``Pair.metrics``;
    validation capped at ``validation_limit`` items if > 0). With ``full`` (the final evaluation): also
    OT-consistency on the first 512 samples and the pair's feature metrics (FID when it has Inception weights).

    Example:
        >>> from otsr.pairs import GaussianShift
        >>> pair = GaussianShift(dim=4, shift=2.0)
        >>> m = evaluate(lambda x: x + pair.delta(x.device), pair, n=2048, cost="mean")
        >>> round(m["l2_uvp"], 6), m["ot_consistency"]
        (0.0, 1.0)
    """
    return evaluate_members(lambda x: t(x)[None], pair, n=n, cost=cost, members=[0], device=device, full=full,
                            seed=seed, chunk=chunk, validation_limit=validation_limit, validate=validate)[0]


class MapChange:
    """How far each member's map moved since the previous evaluation, without T*: on a fixed reference batch,
    ``map_change`` = 100 % E|T_now(x) - T_before(x)|^2 / Var(Q), in L2-UVP's units (a convergence signal for
    pairs with no known map; README shows it falling with L2-UVP)."""

    def __init__(self, pair: Pair, device: torch.device):
        n = max(2, min(CHANGE_SAMPLES, CHANGE_ELEMENTS // max(1, math.prod(pair.shape_q))))
        g = torch.Generator(device=device).manual_seed(EVAL_SEED - 1)
        with pair.evaluation_samples(EVAL_SEED - 1):
            self.x = draw(pair, n, g, False)[0]
        self.var_q = var_q(pair)
        self.before: torch.Tensor | None = None

    @torch.no_grad()
    def measure(self, maps: Callable[[torch.Tensor], torch.Tensor]) -> list[float] | None:
        """Per-member change since the last call (None at the first call); remembers the current outputs."""
        now = maps(self.x).detach().flatten(2).double()
        before, self.before = self.before, now
        if before is None:
            return None
        return (100.0 * (now - before).pow(2).sum(2).mean(1) / self.var_q).tolist()

    def keep(self, rows: list[int]) -> None:
        """Keep only these members' remembered outputs (a bundle that dropped its ended members)."""
        if self.before is not None:
            self.before = self.before[rows]


def probe_map(pair: Pair) -> Callable[[torch.Tensor], torch.Tensor]:
    """A map of the right output shape that needs no training: identity, or bicubic upsampling for SR pairs."""
    shape, shape_q = tuple(pair.shape), tuple(pair.shape_q)
    if shape_q == shape:
        return lambda x: x.float()
    factor = shape_q[-1] // shape[-1]  # validation images have any size: scale, do not resize to the crop
    return lambda x: F.interpolate(x.float(), scale_factor=factor, mode="bicubic", align_corners=False)


def check_pair(pair: Pair, device: torch.device | str = "cpu", cost: str = "mean") -> None:
    """Before training: samples have the declared shapes and are finite, and the whole final evaluation runs
    (the same code path, on 8 samples and one validation item), so a pair cannot fail after training.

    Raises ValueError naming the pair and the problem.
    """
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(0)
    checks = [("sample_p", lambda: draw(pair, 3, g, False)[0], tuple(pair.shape)),
              ("sample_q", lambda: draw_q(pair, 3, g), tuple(pair.shape_q))]
    if pair.has_true_map:
        checks.append(("sample_with_target", lambda: draw(pair, 3, g, True)[1], tuple(pair.shape_q)))
    for what, fn, shape in checks:
        try:
            out = fn()
        except Exception as e:  # a user pair's own bug: report it as bad input, naming the pair and hook
            raise ValueError(f"pair {pair!r}: {what}(3) failed: {type(e).__name__}: {e}") from e
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"pair {pair!r}: {what}(3) returned {type(out).__name__}, not a tensor")
        if tuple(out.shape) != (3, *shape):
            raise ValueError(f"pair {pair!r}: {what}(3) returned shape {tuple(out.shape)}, expected {(3, *shape)}")
        if not torch.isfinite(out).all():
            raise ValueError(f"pair {pair!r}: {what} returned non-finite values")
    try:
        v = var_q(pair)
    except Exception as e:
        raise ValueError(f"pair {pair!r}: var_q() failed: {type(e).__name__}: {e}") from e
    if not v > 0:
        raise ValueError(f"pair {pair!r}: var_q() = {v}, must be > 0")
    try:
        evaluate(probe_map(pair), pair, n=8, cost=cost, device=device, full=True, validation_limit=1)
    except Exception as e:
        raise ValueError(f"pair {pair!r}: the evaluation fails before training: {type(e).__name__}: {e}") from e
