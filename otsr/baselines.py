"""Reference maps a sweep's report draws as lines: the untrained start (identity, or bicubic for SR) and, for
vector pairs with a known map, the best affine map; and the sampling-noise floor of the bias metrics (two
independent samples of Q), which is what a perfect map would score."""

from __future__ import annotations

import math

import torch

from otsr.evaluation import EVAL_SEED, evaluate, probe_map
from otsr.pairs import Pair, best_affine_l2_uvp
from otsr.sampling import draw_q


def baselines(pair: Pair, cost: str, n: int = 1024) -> dict[str, dict[str, float]]:
    """{"identity": metrics of the start map, "best_affine": {"l2_uvp": ...}, "noise_floor": bias of Q vs Q}."""
    out = {"identity": evaluate(probe_map(pair), pair, n=n, cost=cost, full=False)}
    if pair.has_true_map and math.prod(pair.shape) <= 1024 and pair.shape == pair.shape_q:
        out["best_affine"] = {"l2_uvp": best_affine_l2_uvp(pair, n=1 << 14)}
    out["noise_floor"] = noise_floor(pair, cost, n)
    ref = pair.content_reference(n, torch.Generator().manual_seed(EVAL_SEED - 9))
    if ref is not None:
        out["content_floor"] = _bias_of_bank(pair, cost, n, ref)
    return out


def noise_floor(pair: Pair, cost: str, n: int, device: torch.device | str = "cpu") -> dict[str, float]:
    """The bias metrics between Q and an independent sample of Q of the evaluation's size: a map whose T#P is
    exactly Q scores this, not 0."""
    return _bias_of_bank(pair, cost, n, draw_q(pair, n, torch.Generator().manual_seed(EVAL_SEED - 7)), device)


def noise_spread(pair: Pair, cost: str, n: int, draws: int = 3, device: torch.device | str = "cpu") -> dict[str, float]:
    """How far a bias metric moves when a map's outputs are redrawn: its standard deviation over ``draws``
    independent samples of Q scored against the evaluation's fixed Q. This is the noise of comparing evaluations on
    fixed samples; the floor above is a level every map shares (convex-mixture D = 64, 4,096 samples: sliced W2
    floor 0.40, spread 0.04-0.05; README "OTS at scale")."""
    vals = [_bias_of_bank(pair, cost, n, draw_q(pair, n, torch.Generator().manual_seed(EVAL_SEED - 100 - i)), device)
            for i in range(draws)]
    out = {}
    for key in vals[0]:
        sd = float(torch.tensor([v[key] for v in vals], dtype=torch.float64).std())
        out[key] = sd if math.isfinite(sd) else 0.0
    return out


def _bias_of_bank(pair: Pair, cost: str, n: int, bank: torch.Tensor,
                  device: torch.device | str = "cpu") -> dict[str, float]:
    """The bias metrics of a map whose outputs are the samples ``bank`` (n, *shape_q), one chunk after another."""

    class BankAsMap:
        def __init__(self):
            self.at = 0

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            k = x.shape[0]
            y = bank[self.at:self.at + k]
            self.at += k
            return y.to(x.device)

    m = evaluate(BankAsMap(), pair, n=n, cost=cost, device=device, full=False, validate=False)
    return {k: v for k, v in m.items() if k.startswith("bias_")}
