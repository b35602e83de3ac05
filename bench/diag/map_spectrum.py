"""How unevenly does the true map stretch space? The spectrum of T*'s Jacobian at samples of P.

T* = grad psi, so its Jacobian is psi's Hessian: symmetric, eigenvalues lambda_min ... lambda_max. A potential
that is wrong by delta in its inverse map y - grad f(y) / (2 kappa) moves the map's best response by about
J delta (to first order): errors along the stretched directions grow by their eigenvalue relative to the rest.
A stretch by the same factor everywhere costs nothing in L2-UVP (Var(Q) grows with it); what matters is how
many directions are stretched far beyond the least stretched one. The script builds J column by column (central
differences of T*, symmetrised) at ``--samples`` points of P and reports, per point, lambda_min, lambda_max and
the number of eigenvalues above ``--factor`` times lambda_min, with the share of those directions' energy in the
high-pass band (x - its 3x3 box blur) for image pairs.

With ``--run`` (a finished OTS run folder) the points are held-out pairs (x, T*(x)) of the run's pair, and each row
adds where the run's errors lie: the share of |T(x) - T*(x)|^2 (the map's error), of the potential's
inverse-map error at y = T*(x), and of T*'s displacement, in the span of the stretched directions, next to the
share an isotropic error would have there (the span's dimension over D).

    python bench/diag/map_spectrum.py --pair convex-images --out spectrum.json
    python bench/diag/map_spectrum.py --pair convex-mixture --out spectrum.json dim=64
    python bench/diag/map_spectrum.py --run runs/convex-images-ots --samples 24 --out split.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from otsr.cli import split_settings
from otsr.costs import kappa as cost_kappa
from otsr.methods.ots import potential_inverse
from otsr.models import highpass
from otsr.pairs import make_pair
from otsr.state import state_from_checkpoint

HELD_OUT_SEED = 4243


def true_map(pair):
    """T* as a function of x: the pair's own ``true_map``, or grad psi for convex-images pushed forward."""
    if hasattr(pair, "true_map"):
        return pair.true_map
    if getattr(pair, "orientation", None) == "push":
        return pair.grad_psi
    raise ValueError(f"pair {pair.name!r}: no T*(x) to differentiate (a pushforward pair, or convex-images with "
                     "orientation=push)")


def high_pass_share(vectors: torch.Tensor, shape: tuple[int, ...]) -> float:
    """Mean share of each unit vector's energy in x - box3x3(x) (image shapes only)."""
    return float(highpass(vectors.T.reshape(-1, *shape)).flatten(1).pow(2).sum(1).mean())


def spectrum(pair, x: torch.Tensor, factor: float, eps: float = 1e-3) -> tuple[dict, torch.Tensor]:
    """Eigenvalues of the symmetrised finite-difference Jacobian of T* at one point x, and the stretched basis."""
    f, d = true_map(pair), x.numel()
    eye = torch.eye(d, dtype=x.dtype).view(d, *x.shape)
    with torch.no_grad():
        cols = (f(x[None] + eps * eye) - f(x[None] - eps * eye)).flatten(1) / (2 * eps)
    jac = 0.5 * (cols + cols.T).double()
    ev, vecs = torch.linalg.eigh(jac)
    big = ev > factor * ev[0]
    row = {"lambda_min": round(float(ev[0]), 4), "lambda_max": round(float(ev[-1]), 3),
           "n_above": int(big.sum()), "dim": d, "asymmetry": round(float((cols - cols.T).norm() / cols.norm()), 5)}
    if len(x.shape) == 3 and big.any():
        row["high_pass_share_above"] = round(high_pass_share(vecs[:, big], tuple(x.shape)), 3)
    return row, vecs[:, big]


def share_in(basis: torch.Tensor, e: torch.Tensor) -> float:
    """Share of |e|^2 in the span of the orthonormal columns of ``basis``."""
    e = e.flatten().double()
    return round(float((basis.T @ e).pow(2).sum() / e.pow(2).sum()), 4)


def run_errors(run: Path, n: int) -> tuple[object, torch.Tensor, dict[str, torch.Tensor]]:
    """A finished OTS run's pair, n held-out points x, and its errors there: map, inverse map, displacement."""
    cfg, pair, state, _ = state_from_checkpoint(run, method="ots")  # the error split needs a potential
    x, y = pair.sample_with_target(n, torch.Generator().manual_seed(HELD_OUT_SEED))
    with torch.no_grad():
        tx = state.map(x[None])[0]
    inverse = potential_inverse(state.fwd_critic, y[None], cost_kappa(cfg.cost, math.prod(pair.shape_q)))[0]
    return pair, x, {"map_error": tx - y, "inverse_error": inverse - x, "displacement": y - x}


def main() -> None:
    """Write one pair's spectrum rows and their summary as JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--pair", default="convex-images")
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--factor", type=float, default=5.0, help="count eigenvalues above this many times the least")
    ap.add_argument("--run", help="a finished OTS run folder: also split its errors (pair from its checkpoint)")
    ap.add_argument("--out", required=True)
    ap.add_argument("params", nargs="*", help="pair parameters, key=value")
    a = ap.parse_args()
    torch.set_num_threads(1)
    errors: dict[str, torch.Tensor] = {}
    if a.run:
        if a.params:
            raise ValueError(f"--run takes the pair from the run's checkpoint, not {a.params}")
        pair, xs, errors = run_errors(Path(a.run), a.samples)
    else:
        params, settings = split_settings(a.pair, a.params)
        if settings:
            raise ValueError(f"map_spectrum.py takes pair parameters only, not training settings: {sorted(settings)}")
        pair = make_pair(a.pair, **params)
        xs = pair.sample_p(a.samples, torch.Generator().manual_seed(0))
    rows = []
    for i, x in enumerate(xs):
        row, basis = spectrum(pair, x, a.factor)
        if errors:
            row["isotropic_share"] = round(row["n_above"] / row["dim"], 4)
            row.update({f"{k}_share": share_in(basis, e[i]) for k, e in errors.items()})
            row.update({f"{k}_sq": round(float(e[i].pow(2).sum()), 4) for k, e in errors.items()})
        rows.append(row)
        print(row, flush=True)
    out = {"pair": pair.spec().to_dict(), "run": a.run, "factor": a.factor, "rows": rows,
           "n_above_median": sorted(r["n_above"] for r in rows)[len(rows) // 2],
           "condition_median": round(sorted(r["lambda_max"] / r["lambda_min"] for r in rows)[len(rows) // 2], 1)}
    if errors:
        keys = ["isotropic_share", *(f"{k}_share" for k in errors), *(f"{k}_sq" for k in errors)]
        out["mean"] = {k: round(sum(r[k] for r in rows) / len(rows), 4) for k in keys}
        out["mean"]["var_q"] = round(pair.var_q(), 4)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
