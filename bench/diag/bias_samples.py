"""How many samples does a bias reading need? Evaluate finished runs' maps on several sample sizes and put each
bias metric beside the pair's noise floor at that size (two independent samples of Q), so a bias at the floor
is read as "not measured", not as "unbiased".

    python bench/diag/bias_samples.py NAME=RUN_FOLDER [NAME=RUN_FOLDER ...] [--sizes 16384,65536] --out FILE.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from otsr.baselines import noise_floor
from otsr.checkpoint import atomic_write_json
from otsr.evaluation import evaluate
from otsr.state import state_from_checkpoint

KEYS = ("l2_uvp", "bias_sliced_w2", "bias_frechet", "bias_mean_shift")


def main() -> None:
    """Print and write each run's metrics and the noise floors at every size."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="NAME=RUN_FOLDER")
    ap.add_argument("--sizes", default="16384,65536")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    sizes = [int(n) for n in a.sizes.split(",")]
    out = {"sizes": sizes, "runs": {}, "floors": {}}
    for spec in a.runs:
        name, _, folder = spec.partition("=")
        if not folder:
            raise SystemExit(f"{spec!r}: expected NAME=RUN_FOLDER")
        cfg, pair, state, step = state_from_checkpoint(folder)
        rows = {}
        for n in sizes:
            with torch.no_grad():
                m = evaluate(lambda x: state.map(x[None])[0], pair, n=n, cost=cfg.cost, full=False)
            rows[str(n)] = {k: m[k] for k in KEYS if k in m}
            floors = out["floors"].setdefault(pair.spec().describe(), {})
            if str(n) not in floors:  # once per pair and size, however many runs share them
                floors[str(n)] = noise_floor(pair, cfg.cost, n)
        out["runs"][name] = {"run": folder, "pair": pair.spec().describe(), "method": cfg.method, "lam": cfg.lam,
                             "step": step, "rows": rows}
        print(name, step, json.dumps({n: {k: round(v, 4) for k, v in r.items()} for n, r in rows.items()}))
    atomic_write_json(a.out, out)


if __name__ == "__main__":
    main()
