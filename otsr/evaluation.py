"""Evaluate a learned map on a pair, streaming: accuracy against T* (when known) and bias of T#P against Q.

Samples pass through the map in chunks whose size is set by the sample size, and each metric keeps only what
it needs (running sums, moments for the Fréchet distances, projections for sliced W2, the first 512 samples for
OT-consistency), so memory is flat in the number of evaluation samples: 16,384 HR crops of 128 px cost what
a few dozen do.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from otsr import metrics
from otsr.costs import cost as cost_fn
from otsr.pairs import Pair

EVAL_SEED = 2**31 - 1  # evaluation samples are the same at every evaluation and independent of training
OT_CONSISTENCY_SAMPLES = 512
FRECHET_MAX_DIM = 1024  # the raw-sample Fréchet distance needs a d x d covariance: images use pooled features
POOL = 16  # image samples larger than FRECHET_MAX_DIM are compared as POOL x POOL average-pooled images
CHUNK_ELEMENTS = 1 << 21  # elements of one chunk of the larger sample shape (8 MiB in fp32)
N_PROJECTIONS = 128


def chunk_size(pair: Pair, n: int) -> int:
    """Samples per chunk: about CHUNK_ELEMENTS numbers of the larger sample, at most ``n`` and 4096."""
    per = max(math.prod(pair.shape), math.prod(pair.shape_q))
    return max(1, min(n, 4096, CHUNK_ELEMENTS // per))


def feature_spaces(pair: Pair) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The generic Fréchet bias views of a pair: raw samples when small, pooled images otherwise."""
    if math.prod(pair.shape_q) <= FRECHET_MAX_DIM:
        return {"bias_frechet": lambda z: z}
    if len(pair.shape_q) == 3 and min(pair.shape_q[1:]) >= POOL:
        return {"bias_frechet_pool16": lambda z: F.adaptive_avg_pool2d(z.float(), POOL)}
    return {}


def metric_names(pair: Pair, full: bool = True) -> set[str]:
    """The names ``evaluate`` reports for ``pair`` (without evaluating anything)."""
    names = {"transport_cost", "bias_mean_shift", "bias_sliced_w2"} | pair.map_metric_names()
    names |= set(feature_spaces(pair)) | pair.validation_metric_names()
    if pair.has_true_map:
        names |= {"l2_uvp", "cos"}
    if full:
        names |= {"ot_consistency"} | pair.feature_space_names()
    return names


def draw(pair: Pair, n: int, g: torch.Generator, target: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` samples x of P (and T*(x) when ``target``), drawn with autograd available and detached.

    Samplers may need gradients (T* = grad psi of a network); evaluation itself never does.
    """
    with torch.enable_grad():
        if target:
            x, t_star = pair.sample_with_target(n, g)
            return x.detach(), t_star.detach()
        return pair.sample_p(n, g).detach(), None


def var_q(pair: Pair) -> float:
    """``pair.var_q()`` with autograd available (a pair may estimate it from samples of a gradient map)."""
    with torch.enable_grad():
        return float(pair.var_q())


def draw_q(pair: Pair, n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` samples of Q, drawn with autograd available and detached."""
    with torch.enable_grad():
        return pair.sample_q(n, g).detach()


class _Accumulator:
    """Running state of every streaming metric of one evaluation."""

    def __init__(self, pair: Pair, cost: str, full: bool, features: dict, device):
        self.pair, self.cost, self.full = pair, cost, full
        self.n = 0
        self.sums: dict[str, float] = {"transport_cost": 0.0, "l2": 0.0, "uv": 0.0, "uu": 0.0, "vv": 0.0}
        self.extra: dict[str, float] = {}
        self.tx_mean, self.y_mean = metrics.Moments(False), metrics.Moments(False)
        dim = math.prod(pair.shape_q)
        self.theta = metrics.projection_directions(dim, N_PROJECTIONS, 0, device)
        self.proj_tx: list[torch.Tensor] = []
        self.proj_y: list[torch.Tensor] = []
        self.features = features
        self.moments = {k: (metrics.Moments(), metrics.Moments()) for k in self.features}
        self.ot_x: list[torch.Tensor] = []
        self.ot_tx: list[torch.Tensor] = []

    def update(self, x: torch.Tensor, tx: torch.Tensor, y: torch.Tensor, t_star: torch.Tensor | None) -> None:
        k = x.shape[0]
        self.n += k
        self.sums["transport_cost"] += float(cost_fn(self.cost, x, tx).double().sum())
        self.tx_mean.update(tx)
        self.y_mean.update(y)
        self.proj_tx.append(tx.flatten(1).double() @ self.theta)
        self.proj_y.append(y.flatten(1).double() @ self.theta)
        if t_star is not None:
            a, b, x0 = tx.flatten(1).double(), t_star.flatten(1).double(), x.flatten(1).double()
            self.sums["l2"] += float((a - b).pow(2).sum())
            u, v = a - x0, b - x0
            self.sums["uv"] += float((u * v).sum())
            self.sums["uu"] += float(u.pow(2).sum())
            self.sums["vv"] += float(v.pow(2).sum())
        for name, value in self.pair.map_metrics(x, tx).items():
            self.extra[name] = self.extra.get(name, 0.0) + value * k
        for name, fn in self.features.items():
            m_tx, m_y = self.moments[name]
            m_tx.update(fn(tx))
            m_y.update(fn(y))
        if self.full:
            have = sum(len(t) for t in self.ot_x)
            if have < OT_CONSISTENCY_SAMPLES:
                self.ot_x.append(x[: OT_CONSISTENCY_SAMPLES - have])
                self.ot_tx.append(tx[: OT_CONSISTENCY_SAMPLES - have])

    def result(self, has_target: bool) -> dict[str, float]:
        n = self.n
        out = {"transport_cost": self.sums["transport_cost"] / n,
               "bias_mean_shift": float((self.tx_mean.mean() - self.y_mean.mean()).norm()),
               "bias_sliced_w2": metrics.sliced_from_projections(torch.cat(self.proj_tx), torch.cat(self.proj_y))}
        if has_target:
            out["l2_uvp"] = 100.0 * self.sums["l2"] / n / var_q(self.pair)
            den = (self.sums["uu"] / n * self.sums["vv"] / n) ** 0.5
            out["cos"] = self.sums["uv"] / n / den if den > 0 else 0.0
        out.update({name: total / n for name, total in self.extra.items()})
        for name, (m_tx, m_y) in self.moments.items():
            out[name] = metrics.frechet_from_moments(m_tx, m_y) if n >= 2 else math.nan
        if self.full:
            out["ot_consistency"] = metrics.ot_consistency(torch.cat(self.ot_x), torch.cat(self.ot_tx), self.cost)
        return out


@torch.no_grad()
def evaluate(t: Callable[[torch.Tensor], torch.Tensor], pair: Pair, *, n: int, cost: str,
             device: torch.device | str = "cpu", full: bool = True, seed: int = EVAL_SEED, chunk: int = 0,
             validation_limit: int = 0) -> dict[str, float]:
    """Metrics of the map ``t`` on ``n`` fresh samples, streamed in chunks (memory flat in ``n``).

    Always: transport cost E c(x, T(x)); bias of T#P vs Q as mean shift, sliced W2 and Fréchet distance (raw
    samples up to 1024 coordinates, 16x16-pooled images above); L2-UVP and cos when the pair knows T*; the pair's
    own ``map_metrics`` and ``validation_metrics`` (capped at ``validation_limit`` items if > 0). With ``full``
    (the final evaluation): also OT-consistency on the first 512 samples and the pair's heavy feature spaces
    (FID when it has Inception weights).

    Example:
        >>> from otsr.pairs import GaussianShift
        >>> pair = GaussianShift(dim=4, shift=2.0)
        >>> m = evaluate(lambda x: x + pair.delta(x.device), pair, n=2048, cost="mean")
        >>> round(m["l2_uvp"], 6), m["ot_consistency"]
        (0.0, 1.0)
    """
    if n < 2:
        raise ValueError(f"evaluate: n={n} samples; need at least 2")
    device = torch.device(device)
    g = torch.Generator(device=device).manual_seed(seed)
    features = {**feature_spaces(pair), **(pair.feature_spaces(device) if full else {})}
    acc = _Accumulator(pair, cost, full, features, device)
    step = chunk or chunk_size(pair, n)
    with pair.evaluation_samples(seed):
        for start in range(0, n, step):
            k = min(step, n - start)
            x, t_star = draw(pair, k, g, pair.has_true_map)
            y = draw_q(pair, k, g)
            acc.update(x, t(x).detach(), y, t_star)
    out = acc.result(pair.has_true_map)
    out.update(pair.validation_metrics(t, device, validation_limit))
    return out


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
    v = var_q(pair)
    if not v > 0:
        raise ValueError(f"pair {pair!r}: var_q() = {v}, must be > 0")
    try:
        evaluate(probe_map(pair), pair, n=8, cost=cost, device=device, full=True, validation_limit=1)
    except Exception as e:
        raise ValueError(f"pair {pair!r}: the evaluation fails before training: {type(e).__name__}: {e}") from e
