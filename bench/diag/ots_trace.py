"""Trace an OTS run: the potential's held-out gap, weight norms and input-gradient scale every ``every`` steps,
next to the periodic L2-UVP, so a late jump can be attributed (issue: D = 64 convex-mixture falls apart late).

    python bench/diag/ots_trace.py --pair convex-mixture --dim 64 --seed 0 --out trace.json [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from otsr.methods import get_method
from otsr.pairs import make_pair
from otsr.recipes import resolve_config
from otsr.trainers import train


def norms(net: torch.nn.Module) -> float:
    """The L2 norm of all the weights of ``net``."""
    return float(sum(p.detach().float().pow(2).sum() for p in net.parameters()) ** 0.5)


def main() -> None:
    """Train with the trace hook and write the JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--pair", default="convex-mixture")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0, help="pair seed")
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--out", required=True)
    ap.add_argument("settings", nargs="*", help="TrainConfig overrides key=value")
    a = ap.parse_args()
    torch.set_num_threads(1)
    pair = make_pair(a.pair, dim=a.dim, seed=a.seed)
    extra = {}
    for kv in a.settings:
        k, v = kv.split("=", 1)
        extra[k] = type(getattr(resolve_config(pair, {"method": "ots"}), k))(v) if k != "lr_schedule" else v
    cfg = resolve_config(pair, {"method": "ots", "device": "cpu", **extra})
    cfg = cfg.replace(eval_every=a.eval_every, final_eval_samples=1 << 14)
    g = torch.Generator().manual_seed(12345)
    x_held, y_held = pair.sample_p(4096, g), pair.sample_q(4096, g)
    trace: list[dict] = []
    method = get_method("ots")
    orig = type(method).step

    def step(self, s):
        out = orig(self, s)
        if (s.step + 1) % a.every == 0:
            with torch.no_grad():
                tx = s.map(x_held[None])
                f_t, f_y = s.critic(tx), s.critic(y_held[None])
            yq = y_held[None].clone().requires_grad_(True)
            (gy,) = torch.autograd.grad(s.critic(yq).sum(), yq)
            trace.append({"step": s.step + 1, "lr_factor": cfg.lr_factor(s.step), "gap": float(f_y.mean() - f_t.mean()),
                          "f_std": float(f_y.std()), "grad_f": float(gy.flatten(1).norm(dim=1).mean()),
                          "norm_f": norms(s.critic), "norm_t": norms(s.map),
                          "disp": float((tx[0] - x_held).pow(2).sum(1).mean()),
                          "loss_potential": float(out[0, 0]), "loss_map": float(out[0, 1])})
        return out

    type(method).step = step
    t0 = time.process_time()
    res = train(cfg, pair)
    evals = [{k: e.get(k) for k in ("step", "l2_uvp", "bias_sliced_w2", "map_change")} for e in res.evals]
    json.dump({"config": cfg.to_dict(), "pair": [a.pair, a.dim, a.seed], "cpu_s": time.process_time() - t0,
               "final": res.metrics, "evals": evals, "trace": trace}, open(a.out, "w"), indent=1)
    print(json.dumps(evals))


if __name__ == "__main__":
    main()
