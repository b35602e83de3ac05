"""Trace weight averages of the map beside the iterate in one OTS run: several ``map_ema`` decays are kept on the
side (training is untouched: it always updates the iterate), and each is scored by L2-UVP (pairs without T*:
the headline bias and PSNR) every ``eval_every`` steps and at the end, so one run compares every decay against
no average (issue: OTS that does not fall apart late).

    python bench/diag/ema_trace.py --pair convex-mixture --dim 64 --seed 0 --out ema.json [key=value ...]
    python bench/diag/ema_trace.py --pair convex-images --out ema.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from otsr.averaging import MapAverage
from otsr.evaluation import evaluate
from otsr.methods import get_method
from otsr.pairs import make_pair
from otsr.recipes import resolve_config
from otsr.trainers import train


def main() -> None:
    """Train with the averaging hook and write the JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--pair", default="convex-mixture")
    ap.add_argument("--dim", type=int, default=None, help="vector pairs: the dimension")
    ap.add_argument("--seed", type=int, default=0, help="pair seed")
    ap.add_argument("--pair-param", action="append", default=[], metavar="KEY=VALUE", help="another pair parameter")
    ap.add_argument("--decays", default="0.99,0.995,0.998,0.999")
    ap.add_argument("--out", required=True)
    ap.add_argument("settings", nargs="*", help="TrainConfig overrides key=value")
    a = ap.parse_args()
    torch.set_num_threads(1)
    params = {"seed": a.seed, **({"dim": a.dim} if a.dim is not None else {})}
    params.update((k, int(v) if v.isdigit() else v) for k, v in (kv.split("=", 1) for kv in a.pair_param))
    pair = make_pair(a.pair, **params)
    base = resolve_config(pair, {"method": "ots"})
    extra = {k: (type(getattr(base, k))(v) if k != "lr_schedule" else v)
             for k, v in (kv.split("=", 1) for kv in a.settings)}
    cfg = resolve_config(pair, {"method": "ots", "device": "cpu", **extra})
    decays = [float(d) for d in a.decays.split(",")]
    averages: dict[float, MapAverage] = {}
    trace: list[dict] = []
    method = get_method(cfg.method)
    orig = type(method).step

    keys = ["l2_uvp"] if pair.has_true_map else []
    keys += [pair.headline().bias, "psnr"]

    def scores(s, n: int) -> float | dict[str, float]:
        m = evaluate(lambda x: s.map(x[None])[0], pair, n=n, cost=cfg.cost, full=False)
        got = {k: m[k] for k in keys if k in m}
        return got["l2_uvp"] if pair.has_true_map else got  # (vector runs: L2-UVP alone, as first written)

    def score(s, n: int) -> dict[str, float | dict[str, float]]:
        s.map.eval()
        with torch.no_grad():
            out = {"iterate": scores(s, n)}
        for d, avg in averages.items():
            with avg.applied(), torch.no_grad():
                out[str(d)] = scores(s, n)
        s.map.train()
        return out

    def step(self, s):
        if not averages:
            averages.update({d: MapAverage(s.map, s.k, d) for d in decays})
        out = orig(self, s)
        for avg in averages.values():
            avg.update()
        done = s.step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            trace.append({"step": done, **score(s, cfg.final_eval_samples if done == cfg.steps else cfg.eval_samples)})
            print(json.dumps(trace[-1]), flush=True)
        return out

    type(method).step = step
    t0 = time.process_time()
    res = train(cfg, pair)
    evals = [{k: e.get(k) for k in ("step", "l2_uvp", "bias_sliced_w2", "map_change")} for e in res.evals]
    json.dump({"config": cfg.to_dict(), "pair": [a.pair, params], "cpu_s": time.process_time() - t0,
               "final": res.metrics, "evals": evals, "averages": trace}, open(a.out, "w"), indent=1)
    print(json.dumps(evals))


if __name__ == "__main__":
    main()
