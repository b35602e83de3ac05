"""Can the OTS potential's class express the optimal potential? On a pair with a known map, fit it directly.

At y = T*(x) the optimal potential for the cost kappa |x - y|^2 has gradient 2 kappa (y - x) (the map is
T(x) = argmin_y kappa |x - y|^2 - f(y), so x + grad f(T(x)) / (2 kappa) = T(x)). This script trains the default
potential (the recipe's network, scale and learning rate) on E |grad f(y) / (2 kappa) - (y - x)|^2 alone (no
game) and reports that error as a share of Var(Q) on separately drawn samples (for pool-based pairs such as
convex-images they come from the same crop pool): the error of the inverse map y - grad f(y) / (2 kappa) at Q's
points. It equals L2-UVP at the identity (f = 0) and matches the forward map's error only to first order (up to
the Jacobian of T*), so read it as what this potential class can express, not as the L2-UVP a perfect game would
reach. If it is far below OTS's own L2-UVP on the pair, the game rather than the class is what stops OTS.

With ``--fit map`` it fits the recipe's map instead, by regression on T*(x) (its optimiser, batch and rate; no
game), and reports L2-UVP: what the map's class can express in that many updates.

With ``--fit best-response`` it fits the potential as above, freezes it, then trains the recipe's map on OTS's own
map loss E[c(x, T(x)) - f(T(x))] against it for ``--map-updates`` updates (the map's rate, on a cosine when the
recipe has one) and reports L2-UVP: how close the map's best response to a nearly optimal potential gets. Far
below OTS's L2-UVP: the potential the game learns is what is wrong; near it: the map's inner problem is.

    python bench/diag/potential_fit.py --pair convex-images --steps 3000 --out fit.json [KEY=VALUE ...]
    python bench/diag/potential_fit.py --pair convex-mixture --fit map --steps 6000 --out fit.json dim=64
    python bench/diag/potential_fit.py --pair convex-images --fit best-response --map-updates 6000 --out br.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from otsr.bench.potential_check import displacement_error
from otsr.cli import split_settings
from otsr.costs import kappa as cost_kappa
from otsr.pairs import make_pair
from otsr.recipes import resolve_config
from otsr.state import build_state

HELD_OUT_SEED = 4243


def main() -> None:
    """Fit the recipe's potential to the known displacement and write the error curve as JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--pair", default="convex-images")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--n", type=int, default=1024, help="held-out samples")
    ap.add_argument("--fit", choices=("potential", "map", "best-response"), default="potential")
    ap.add_argument("--map-updates", type=int, default=6000, help="best-response: map updates against the fit")
    ap.add_argument("--out", required=True)
    ap.add_argument("settings", nargs="*", help="pair parameters and TrainConfig settings, key=value "
                    "(lr_critic=... sets the fit's learning rate)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    params, settings = split_settings(a.pair, a.settings)
    pair = make_pair(a.pair, **params)
    if not pair.has_true_map:
        raise ValueError(f"pair {a.pair!r} has no known map (sample_with_target): nothing to fit against")
    cfg = resolve_config(pair, {"method": "ots", "device": "cpu", **settings})
    s = build_state(cfg, pair)
    f = s.critic  # trained with the state's own optimiser: the recipe's rate, betas and eps in f's units
    kap = cost_kappa(cfg.cost, math.prod(pair.shape_q))
    g = torch.Generator().manual_seed(cfg.seed)
    xe, ye = pair.sample_with_target(a.n, torch.Generator().manual_seed(HELD_OUT_SEED))
    var_q = pair.var_q()
    curve, t0 = [], time.process_time()

    def map_error(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (s.map(x[None])[0] - y).flatten(1).pow(2).sum(1)

    def map_losses() -> dict[str, float]:
        """OTS's map loss E[c(x, T(x)) - f(T(x))] of the map and of T* (held out): if the map's is below T*'s, T* is
        not the best response to this f (f is wrong off Q's support, where only the game trains it)."""
        with torch.no_grad():
            def loss(tx: torch.Tensor, xc: torch.Tensor) -> float:
                return float((s.content_cost(xc[None], tx[None]) - s.fwd_critic(tx[None])).sum())

            chunks = list(zip(xe.split(256), ye.split(256)))
            return {"map_loss": sum(loss(s.map(xc[None])[0], xc) for xc, _ in chunks) / len(xe),
                    "t_star_loss": sum(loss(yc, xc) for xc, yc in chunks) / len(xe)}

    def measure(step: int, what: str = a.fit) -> None:
        if what == "map":
            with torch.no_grad():
                err = torch.cat([map_error(xc, yc) for xc, yc in zip(xe.split(256), ye.split(256))]).mean()
        else:
            err = torch.cat([displacement_error(f, xc, yc, kap, False).detach() for xc, yc in
                             zip(xe.split(256), ye.split(256))]).mean()
        extra = map_losses() if a.fit == "best-response" and what == "map" else {}
        curve.append({"step": step, "fit_uvp": round(float(100 * err / var_q), 3), **extra,
                      "cpu_s": round(time.process_time() - t0, 1)})
        print(curve[-1], flush=True)

    measure(0)
    for step in range(1, a.steps + 1):
        x, y = pair.sample_with_target(cfg.batch_size, g)
        if a.fit == "map":
            s.set_lr(cfg.lr_factor(step - 1))
            s.update(s.opt_map, (map_error(x, y).mean() / var_q)[None])
        else:
            s.update(s.opt_critic, (displacement_error(f, x, y, kap, True).mean() / var_q)[None])
        if step % a.every == 0 or step == a.steps:
            measure(step)
    out = {"pair": pair.spec().to_dict(), "config": cfg.to_dict(), "fit": a.fit,
           "lr": cfg.lr_map if a.fit == "map" else cfg.lr_critic,
           "start_uvp": curve[0]["fit_uvp"], "curve": list(curve)}
    if a.fit == "best-response":
        out["map_curve"] = best_response(s, pair, cfg, a.map_updates, a.every, g, measure, curve)
        out["map_lr"] = cfg.lr_map
    Path(a.out).write_text(json.dumps(out, indent=1))


def best_response(s, pair, cfg, updates: int, every: int, g: torch.Generator, measure, curve: list) -> list:
    """Train the map alone on OTS's map loss against the frozen potential; its L2-UVP curve (the curve's tail)."""
    s.critic.requires_grad_(False)
    start = len(curve)
    measure(0, "map")
    for step in range(1, updates + 1):
        factor = 0.5 * (1 + math.cos(math.pi * (step - 1) / updates)) if cfg.lr_schedule == "cosine" else 1.0
        s.set_lr(factor)
        x = pair.sample_p(cfg.batch_size, g)[None]
        tx = s.fwd_map(x)
        s.update(s.opt_map, s.content_cost(x, tx).mean(1) - s.fwd_critic(tx).mean(1))
        if step % every == 0 or step == updates:
            measure(step, "map")
    return curve[start:]


if __name__ == "__main__":
    main()
