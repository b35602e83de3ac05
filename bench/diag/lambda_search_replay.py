"""Replay a finished λ search on its recorded curves: best objective found against member-steps trained, for the
search as it ran (every member to the end) and for successive halving across its members (rungs at the periodic
evaluations; keep the best 1/eta at each rung). A replay, not a run: it shows what other rungs would buy on
the same curves (bundles now drop their stopped members, so a run's saving is wall time too: README, "The main
job's time").

    python bench/diag/lambda_search_replay.py SWEEP_FOLDER [SWEEP_FOLDER ...] [--phase gan] [--metric l2_uvp]
        [--rungs 100,200] [--eta 3,4] [--within 1.03] [--mode min] [--out FILE.json]

Rungs read the periodic evaluations; the end reads the final one (the full-size evaluation at the last step).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def curves(folder: Path, phase: str, metric: str, sign: float) -> dict[str, dict[int, float]]:
    """Member key -> {step: sign * metric} of one phase (lower is better), in the order its members were created;
    members that never wrote a result are left out, with a line on stderr."""
    state = json.loads((folder / "state.json").read_text())
    out = {}
    for key, m in state["members"].items():
        if m.get("phase") != phase:
            continue
        path = folder / "members" / key / "result.json"
        if not path.exists():
            print(f"{path}: missing; member {key} left out", file=sys.stderr)
            continue
        evals = json.loads(path.read_text())["evals"]
        out[key] = {int(e["step"]): sign * float(e[metric]) for e in evals
                    if metric in e and math.isfinite(e[metric])}
    return out


def run_to_end(c: dict[str, dict[int, float]], steps: list[int]) -> list[tuple[int, float]]:
    """Every member trained to each evaluation: (member-steps so far, best value among them at that step)."""
    return [(len(c) * s, min(v[s] for v in c.values() if s in v)) for s in steps if s > 0]


def halving(c: dict[str, dict[int, float]], rungs: list[int], end: int, eta: int) -> list[tuple[int, float]]:
    """Successive halving: all members to the first rung, the best ceil(n / eta) on to the next, ... to ``end``."""
    alive, spent, prev, trace = list(c), 0, 0, []
    for r in [*rungs, end]:
        spent += len(alive) * (r - prev)
        alive.sort(key=lambda k: c[k].get(r, math.inf))
        trace.append((spent, c[alive[0]].get(r, math.inf)))
        if r != end:
            alive = alive[:max(1, math.ceil(len(alive) / eta))]
        prev = r
    return trace


def main() -> None:
    """Print each folder's table; write them all to --out."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--phase", default="gan")
    ap.add_argument("--metric", default="l2_uvp")
    ap.add_argument("--rungs", default="100,200")
    ap.add_argument("--eta", default="3,4")
    ap.add_argument("--within", type=float, default=0.0, help="tolerance above the full search's best (seed spread)")
    ap.add_argument("--mode", choices=("min", "max"), default="min", help="which way the metric is better")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rungs = [int(r) for r in args.rungs.split(",")]
    sign = 1.0 if args.mode == "min" else -1.0
    report = {}
    for folder in args.folders:
        c = curves(folder, args.phase, args.metric, sign)
        if not c:
            sys.exit(f"{folder}: no member of phase {args.phase!r} has a result")
        steps = sorted({s for v in c.values() for s in v})
        if not set(rungs) <= set(steps) or max(rungs) >= steps[-1]:
            sys.exit(f"{folder}: --rungs {args.rungs} must be evaluation steps before the last; recorded: {steps}")
        full = run_to_end(c, steps)
        target = full[-1][1] + args.within
        rows = {"to the end": full}
        for eta in (int(e) for e in args.eta.split(",")):
            rows[f"halving eta={eta}"] = halving(c, rungs, steps[-1], eta)
        print(f"\n{folder.name}: {len(c)} members; best at the end {sign * full[-1][1]:.3g}; "
              f"target {sign * target:.3g}")
        print("| schedule | member-steps: best member at that step | share of full compute at the end | reaches "
              "the target |")
        print("|---|---|---|---|")
        for name, trace in rows.items():
            pts = ", ".join(f"{n}: {sign * b:.3g}" for n, b in trace)
            print(f"| {name} | {pts} | {trace[-1][0] / full[-1][0]:.0%} | {trace[-1][1] <= target} |")
        report[folder.name] = {"members": len(c), "target": sign * target,
                               "rows": {k: [[n, sign * b] for n, b in t] for k, t in rows.items()}}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
