"""Read the OT map off a trained OTS potential instead of off its map.

For the cost kappa |x - y|^2 the optimal potential f gives the inverse map: x = y - grad f(y) / (2 kappa) at
y = T*(x). This script loads a finished OTS run (its checkpoint's potential, frozen), draws y from Q, and fits a
map by plain regression on the pairs (y - grad f(y) / (2 kappa), y): the game's potential, read out through its
gradient on Q's support only, where the game trains it. It reports L2-UVP (% of Var(Q), held-out samples of a
pair with a known map) of the run's own map, of the potential's inverse map (``potential_uvp``, the displacement
error of ``potential_fit.py``), and of the read-out map as it trains, then both maps' L2-UVP and headline bias on
the same 4,096 evaluation samples. If the read-out map is far better than the
run's map, the potential had the answer and the map's inner problem is what lost it.

    otsr train --pair convex-images --out run --threads 1
    python bench/diag/potential_readout.py run --steps 3000 --out readout.json [--start run]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from otsr.bench.potential_check import displacement_error
from otsr.costs import kappa as cost_kappa
from otsr.evaluation import evaluate
from otsr.methods.ots import potential_inverse
from otsr.state import build_state, state_from_checkpoint

HELD_OUT_SEED = 4243  # as potential_fit.py


def main() -> None:
    """Load the run, fit the read-out map, write the curve as JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("run", help="a finished OTS run folder (otsr train --out)")
    ap.add_argument("--steps", type=int, default=3000, help="regression updates of the read-out map")
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--n", type=int, default=1024, help="held-out samples")
    ap.add_argument("--start", choices=("fresh", "run"), default="fresh",
                    help="the read-out map starts where training starts a map (fresh) or at the run's map (run)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg, pair, run, run_step = state_from_checkpoint(a.run, method="ots")  # the read-out needs a potential
    if not pair.has_true_map:
        raise ValueError(f"{a.run}: pair {pair.spec().describe()} has no known map to score the read-out against")
    f = run.critic.requires_grad_(False)
    readout = build_state(cfg, pair)  # a fresh map at the recipe's start, the recipe's optimiser and rate
    if a.start == "run":
        readout.map.load_state_dict(run.map.state_dict())
    kap = cost_kappa(cfg.cost, math.prod(pair.shape_q))
    var_q = pair.var_q()
    xe, ye = pair.sample_with_target(a.n, torch.Generator().manual_seed(HELD_OUT_SEED))

    def uvp(net) -> float:
        with torch.no_grad():
            err = torch.cat([(net(xc[None])[0] - yc).flatten(1).pow(2).sum(1)
                             for xc, yc in zip(xe.split(256), ye.split(256))]).mean()
        return round(float(100 * err / var_q), 3)

    potential_uvp = torch.cat([displacement_error(f, xc, yc, kap) for xc, yc in
                               zip(xe.split(256), ye.split(256))]).mean()
    out = {"run": str(a.run), "pair": pair.spec().to_dict(), "config": cfg.to_dict(), "run_step": run_step,
           "run_map_uvp": uvp(run.map), "potential_uvp": round(float(100 * potential_uvp / var_q), 3),
           "start": a.start, "curve": []}
    print({k: out[k] for k in ("run_step", "run_map_uvp", "potential_uvp")}, flush=True)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    t0 = time.process_time()
    for step in range(a.steps + 1):
        if step % a.every == 0 or step == a.steps:
            out["curve"].append({"step": step, "readout_uvp": uvp(readout.map),
                                 "cpu_s": round(time.process_time() - t0, 1)})
            print(out["curve"][-1], flush=True)
        if step == a.steps:
            break
        y = pair.sample_q(cfg.batch_size, g)
        x_hat = potential_inverse(f, y[None], kap)[0]
        readout.set_lr(0.5 * (1 + math.cos(math.pi * step / a.steps)))
        loss = (readout.map(x_hat[None])[0] - y).flatten(1).pow(2).sum(1).mean() / var_q
        readout.update(readout.opt_map, loss[None])
    keys = ("l2_uvp", pair.headline().bias)
    for name, net in (("run_metrics", run.map), ("readout_metrics", readout.map)):  # the same 4,096 samples
        with torch.no_grad():
            m = evaluate(lambda x, net=net: net(x[None])[0], pair, n=4096, cost=cfg.cost, full=False)
        out[name] = {k: m[k] for k in keys if k in m}
    print({k: out[k] for k in ("run_metrics", "readout_metrics")}, flush=True)
    Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
