"""Evaluate a learned map on a pair: accuracy against T* (when known) and bias of T#P against Q."""

from __future__ import annotations

from collections.abc import Callable

import torch

from otsr import metrics
from otsr.costs import cost as cost_fn
from otsr.costs import numel
from otsr.pairs import Pair

EVAL_SEED = 2**31 - 1  # evaluation samples are the same at every evaluation and independent of training
OT_CONSISTENCY_SAMPLES = 512
FRECHET_MAX_DIM = 1024  # the Fréchet distance needs a d x d covariance square root: skipped above this


def metric_names(pair: Pair, full: bool = True) -> set[str]:
    """The names ``evaluate`` reports for ``pair`` (without evaluating anything heavy)."""
    names = {"transport_cost", "bias_mean_shift", "bias_sliced_w2"}
    if pair.has_true_map:
        names |= {"l2_uvp", "cos"}
    if full:
        names.add("ot_consistency")
        if numel(pair.shape_q) <= FRECHET_MAX_DIM:
            names.add("bias_frechet")
    extra = getattr(pair, "map_metrics", None)
    if extra is not None:
        x = pair.sample_p(2, torch.Generator().manual_seed(0))
        names |= set(extra(x, x))
    if full and hasattr(pair, "map_eval_names"):
        names |= pair.map_eval_names()
    return names


@torch.no_grad()
def evaluate(t: Callable[[torch.Tensor], torch.Tensor], pair: Pair, *, n: int, cost: str,
             device: torch.device | str = "cpu", full: bool = True, seed: int = EVAL_SEED) -> dict[str, float]:
    """Metrics of the map ``t`` on ``n`` fresh samples.

    Always: transport cost E c(x, T(x)); bias of T#P vs Q as mean shift and sliced W2; L2-UVP and cos
    when the pair knows T*. With ``full``: also OT-consistency and the Fréchet distance (slower; only for
    samples of at most FRECHET_MAX_DIM coordinates).
    Pairs may add their own entries through a ``map_metrics(x, tx)`` method.
    """
    g = torch.Generator(device=device).manual_seed(seed)
    if pair.has_true_map:
        x, t_star = pair.sample_with_target(n, g)
    else:
        x, t_star = pair.sample_p(n, g), None
    y = pair.sample_q(n, g)
    tx = metrics.apply_map(t, x)
    out = {"transport_cost": float(cost_fn(cost, x, tx).mean()),
           "bias_mean_shift": metrics.mean_shift(tx, y),
           "bias_sliced_w2": metrics.sliced_wasserstein(tx, y)}
    if t_star is not None:
        out["l2_uvp"] = metrics.l2_uvp(tx, t_star, pair.var_q())
        out["cos"] = metrics.cosine(x, tx, t_star)
    if full:
        if numel(pair.shape_q) <= FRECHET_MAX_DIM:
            out["bias_frechet"] = metrics.frechet(tx, y)
        k = min(n, OT_CONSISTENCY_SAMPLES)
        out["ot_consistency"] = metrics.ot_consistency(x[:k], tx[:k], cost)
    extra = getattr(pair, "map_metrics", None)
    if extra is not None:
        out.update(extra(x, tx))
    if full and hasattr(pair, "map_eval"):  # pairs with their own validation data (super-resolution)
        out.update(pair.map_eval(t, device))
    return out
