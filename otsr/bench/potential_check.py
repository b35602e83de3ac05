"""``otsr bench --potential-check PAIR``: whether the second network can tell Q from the start map's outputs.

The map is frozen where training starts it (bicubic upsampling for SR pairs, the identity for same-shape image
pairs, the Bures map for vector OTS) and only the OTS potential, then separately the GAN critic, is trained on
that map's outputs against Q with the recipe's own settings. At each evaluation it prints, on held-out samples,
the gap E f(y) - E f(T(x)) (what the potential maximises) and the separation AUC = P(f(y) > f(T(x))) (0.5: f
sees no difference; 1: it ranks every HR crop above every output). A potential that cannot separate gives the map
nothing to follow, so OTS stays at its start: this is the first thing to check when a map does not learn.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from otsr.methods import comparison_methods, get_method
from otsr.methods.gan import gradient_penalty
from otsr.methods.ots import potential_inverse
from otsr.models import from_channels, to_channels
from otsr.pairs import Pair
from otsr.recipes import resolve_config
from otsr.state import TrainState, build_state

AUC_TARGET = 0.9  # what the check asks of the default recipe on the SR demo pair
HELD_OUT_SEED = 4242  # evaluation samples, never drawn in training


def separation_auc(f_q: torch.Tensor, f_t: torch.Tensor) -> float:
    """P(f(y) > f(T(x))) + 1/2 P(tie) over all pairs of held-out samples (the Mann-Whitney AUC), (n,), (m,)."""
    if f_q.ndim != 1 or f_t.ndim != 1:
        raise ValueError(f"separation_auc takes two 1-D score vectors, got {tuple(f_q.shape)} and {tuple(f_t.shape)}")
    scores = torch.cat([f_q, f_t]).double()
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=scores.dtype)
    for v in scores.unique()[scores.unique(return_counts=True)[1] > 1]:  # ties share their mean rank
        ranks[scores == v] = ranks[scores == v].mean()
    n, m = len(f_q), len(f_t)
    return float((ranks[:n].sum() - n * (n + 1) / 2) / (n * m))


def displacement_error(f, x: torch.Tensor, y: torch.Tensor, kap: float, create_graph: bool = False) -> torch.Tensor:
    """Per-sample |grad f(y) / (2 kappa) - (y - x)|^2 at y = T*(x), (B,): how far a potential f (one member) is from
    the optimal one for the cost kappa |x - y|^2, whose gradient there is 2 kappa (y - x); 0 for an optimal f."""
    return (potential_inverse(f, y[None], kap, create_graph)[0] - x).flatten(1).pow(2).sum(1)


def start_map(s: TrainState):
    """The map where training starts it, (K, B, ...) -> (K, B, ...): an image map's base (bicubic, the identity:
    its learned residual starts at zero, so this is exact and skips the network) or the vector map itself."""
    if len(s.pair.shape) == 1 or getattr(s.map, "warm_image", False):  # its residual starts at zero as well
        return s.map
    return lambda x: from_channels(s.map.net.base(to_channels(x)).float(), s.k)


def _update(s: TrainState, t) -> torch.Tensor:
    """One update of the second network against the frozen map ``t``: the OTS potential's loss, or the critic's with
    its gradient penalty; returns the loss (K,)."""
    x, y = s.sample_p(), s.sample_q()
    with torch.no_grad():
        tx = t(x)
    loss = s.critic(tx).mean(1) - s.critic(y).mean(1)
    if not s.method.critic_is_potential and s.any_positive("gp"):
        loss = loss + s.member_values("gp") * gradient_penalty(s.critic, y, tx, s.uniform(y.shape[1], y.ndim - 2))
    s.update(s.opt_critic, loss)
    return loss.detach()


def check_method(pair: Pair, method: str, settings: dict[str, Any], n_eval: int, evals: int,
                 quiet: bool = False) -> dict[str, Any]:
    """Train ``method``'s potential or critic alone for the recipe's steps (or ``settings['steps']``)."""
    cfg = resolve_config(pair, {"method": method, **settings})
    s = build_state(cfg, pair)
    s.map.requires_grad_(False)
    t = start_map(s)
    g = torch.Generator(device=s.device).manual_seed(HELD_OUT_SEED)
    with pair.evaluation_samples(HELD_OUT_SEED), torch.no_grad():
        x_held, y_held = pair.sample_p(n_eval, g), pair.sample_q(n_eval, g)
        t_held = torch.cat([t(c[None]) for c in x_held.split(256)], 1)

    def measure(step: int, loss: float) -> dict[str, float]:
        with torch.no_grad():
            f_q = torch.cat([s.critic(c[None])[0] for c in y_held.split(256)])
            f_t = torch.cat([s.critic(c[None])[0] for c in t_held[0].split(256)])
        row = {"step": step, "gap": float(f_q.mean() - f_t.mean()), "auc": separation_auc(f_q, f_t),
               "f_scale": float(torch.cat([f_q, f_t]).std()), "loss": loss,
               "cpu_s": round(time.process_time() - t0, 1)}
        if not quiet:
            print(f"  {method} step {step:5d}: gap {row['gap']:+.3e}  AUC {row['auc']:.3f}  "
                  f"(f std {row['f_scale']:.2e}, {row['cpu_s']:.0f} CPU s)", flush=True)
        return row

    t0 = time.process_time()
    every = max(1, cfg.steps // evals)
    curve = [measure(0, math.nan)]
    for step in range(1, cfg.steps + 1):
        s.set_lr(cfg.lr_factor(step - 1))
        loss = _update(s, t)
        if step % every == 0 or step == cfg.steps:
            curve.append(measure(step, float(loss[0])))
    return {"method": method, "role": "potential" if get_method(method).critic_is_potential else "critic",
            "config": cfg.to_dict(), "curve": curve, "auc": curve[-1]["auc"],
            "best_auc": max(r["auc"] for r in curve), "cpu_s": curve[-1]["cpu_s"]}


def run_potential_check(pair: Pair, settings: dict[str, Any], methods: tuple[str, ...] | None = None,
                        n_eval: int = 512, evals: int = 10, quiet: bool = False) -> dict[str, Any]:
    """Each method's second network trained alone against the frozen start map (default: every method of the
    comparison, references first); see the module docstring."""
    out: dict[str, Any] = {"pair": pair.spec().to_dict(), "n_eval": n_eval, "target_auc": AUC_TARGET}
    for method in methods or [m.name for m in comparison_methods()]:
        if not quiet:
            print(f"{method}: {'potential' if get_method(method).critic_is_potential else 'critic'} against the "
                  f"frozen start map on {pair!r}", flush=True)
        out[method] = check_method(pair, method, settings, n_eval, evals, quiet)
    return out


def summary_lines(results: dict[str, Any]) -> list[str]:
    """One verdict line per method."""
    lines = []
    for key, r in results.items():
        if not isinstance(r, dict) or "curve" not in r:
            continue
        verdict = "separates" if r["auc"] >= AUC_TARGET else "does NOT separate"
        lines.append(f"{key} {r['role']}: AUC {r['curve'][0]['auc']:.3f} -> {r['auc']:.3f} after "
                     f"{r['curve'][-1]['step']} updates ({r['cpu_s']:.0f} CPU s): {verdict} (target {AUC_TARGET})")
    return lines


def write_json(results: dict[str, Any], path: Path) -> None:
    """Store the results with their curves."""
    Path(path).write_text(json.dumps(results, indent=2, sort_keys=True))
