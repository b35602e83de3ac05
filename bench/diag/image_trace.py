"""Trace an OTS (or GAN) run on an image pair: the second network's held-out gap and separation AUC, its input
gradient, and how far the map has moved from its start, every ``every`` steps, next to the periodic evaluation.
What to look at when an image map does not learn (issue: images, proven on this CPU). On pairs with a known map
it also traces the map's L2-UVP and the potential's distance from the optimal one (``potential_uvp``, the
displacement error of ``bench/diag/potential_fit.py``), both in % of Var(Q) on held-out samples: which of the two
networks the game leaves wrong.

    python bench/diag/image_trace.py --pair sr-folders --out t.json root=demo hr_crop=32 [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from otsr.bench.potential_check import HELD_OUT_SEED, displacement_error, separation_auc, start_map
from otsr.cli import split_settings
from otsr.costs import kappa as cost_kappa
from otsr.methods import get_method
from otsr.pairs import make_pair
from otsr.recipes import resolve_config
from otsr.trainers import train


def main() -> None:
    """Train with the trace hook and write the JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--pair", default="sr-folders")
    ap.add_argument("--method", default="ots")
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--n", type=int, default=256, help="held-out samples of each side")
    ap.add_argument("--out", required=True)
    ap.add_argument("settings", nargs="*", help="pair parameters and TrainConfig settings, key=value (as for "
                    "otsr bench --potential-check)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    params, settings = split_settings(a.pair, a.settings)
    pair = make_pair(a.pair, **params)
    cfg = resolve_config(pair, {"method": a.method, "device": "cpu", **settings})
    g = torch.Generator().manual_seed(HELD_OUT_SEED)
    with pair.evaluation_samples(HELD_OUT_SEED):
        x_held, y_held = pair.sample_p(a.n, g)[None], pair.sample_q(a.n, g)[None]
    known = pair.sample_with_target(a.n, torch.Generator().manual_seed(HELD_OUT_SEED)) if pair.has_true_map else None
    kap, var_q = cost_kappa(cfg.cost, math.prod(pair.shape_q)), pair.var_q() if known else 1.0
    trace: list[dict] = []
    method = get_method(a.method)
    orig = type(method).step

    def step(self, s):
        out = orig(self, s)
        if (s.step + 1) % a.every == 0 or s.step == 0:
            with torch.no_grad():
                tx, t0x = s.map(x_held), start_map(s)(x_held)
                f_t, f_y = s.critic(tx)[0], s.critic(y_held)[0]
            yq = y_held.clone().requires_grad_(True)
            (gy,) = torch.autograd.grad(s.critic(yq).sum(), yq)
            trace.append({"step": s.step + 1, "gap": float(f_y.mean() - f_t.mean()), "auc": separation_auc(f_y, f_t),
                          "f_std": float(torch.cat([f_y, f_t]).std()),
                          "grad_f_rms": float(gy.pow(2).mean().sqrt()),
                          "move_rms": float((tx - t0x).pow(2).mean().sqrt()),
                          **(_against_t_star(s, known, kap, var_q, self.critic_is_potential) if known else {}),
                          "cpu_s": round(time.process_time() - t_start, 1)})
            print(json.dumps(trace[-1]), flush=True)
        return out

    type(method).step = step
    t_start = time.process_time()
    res = train(cfg, pair)
    evals = [{k: v for k, v in e.items()} for e in res.evals]
    json.dump({"config": cfg.to_dict(), "pair": pair.spec().to_dict(), "cpu_s": time.process_time() - t_start,
               "final": res.metrics, "evals": evals, "trace": trace}, open(a.out, "w"), indent=1)


def _against_t_star(s, known: tuple[torch.Tensor, torch.Tensor], kap: float, var_q: float,
                    potential: bool) -> dict[str, float]:
    """The map's L2-UVP and (OTS) the potential's displacement error, % of Var(Q), on held-out (x, T*(x))."""
    x, y = known
    with torch.no_grad():
        map_err = (s.map(x[None])[0] - y).flatten(1).pow(2).sum(1).mean()
    out = {"map_uvp": round(float(100 * map_err / var_q), 3)}
    if potential:  # a GAN critic has no optimal gradient to compare with
        out["potential_uvp"] = round(float(100 * displacement_error(s.critic, x, y, kap).mean() / var_q), 3)
    return out


if __name__ == "__main__":
    main()
