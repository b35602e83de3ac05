"""Replay a finished λ search on its recorded curves: best objective found against member-steps trained, for the
search as it ran (every member to the end) and for successive halving across its members (rungs at the periodic
evaluations; keep the best 1/eta at each rung). A replay, not a run: it shows what other rungs would buy on
the same curves (bundles now drop their stopped members, so a run's saving is wall time too: README, "The main
job's time").

    python bench/diag/lambda_search_replay.py SWEEP_FOLDER [SWEEP_FOLDER ...] [--phase gan] [--metric l2_uvp]
        [--rungs 100,200] [--eta 3,4] [--within 1.03] [--mode min] [--asha 100:4,50:4] [--also bias_sliced_w2]
        [--bundle 8] [--out FILE.json]

Rungs read the periodic evaluations; the end reads the final one (the full-size evaluation at the last step).
``--asha GRACE:RF`` replays the sweep's own scheduler (``sweep.asha.Rungs``: a member goes on when it is in the best
1/RF by the metric or by an ``--also`` metric), bundles of ``--bundle`` members (in creation order) reaching each
rung one after the other, and says which members that ended less biased than the reference (``--reference``'s
mean ``--also`` value, e.g. OTS's, from the sweep's report) it kept.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def member_evals(folder: Path, phase: str) -> dict[str, list[dict]]:
    """Member key -> its recorded evaluations, for one phase's members in the order they were created (read once
    per folder); members that never wrote a result are left out, with a line on stderr."""
    state = json.loads((folder / "state.json").read_text())
    out = {}
    for key, m in state["members"].items():
        if m.get("phase") != phase:
            continue
        path = folder / "members" / key / "result.json"
        if not path.exists():
            print(f"{path}: missing; member {key} left out", file=sys.stderr)
            continue
        out[key] = json.loads(path.read_text())["evals"]
    return out


def curves(evals: dict[str, list[dict]], metric: str, sign: float) -> dict[str, dict[int, float]]:
    """Member key -> {step: sign * metric} (lower is better), from ``member_evals``."""
    return {key: {int(e["step"]): sign * float(e[metric]) for e in ev if metric in e and math.isfinite(e[metric])}
            for key, ev in evals.items()}


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


def member_values(evals: dict[str, list[dict]], metrics: list[str]) -> dict[str, dict[int, dict[str, float]]]:
    """Member key -> {step: {metric: value}} for each of ``metrics`` (raw values, the sweep's directions)."""
    per = {m: curves(evals, m, 1.0) for m in metrics}
    keys = [k for k in per[metrics[0]] if all(k in per[m] for m in metrics)]
    return {k: {s: {m: per[m][k][s] for m in metrics} for s in per[metrics[0]][k]
                if all(s in per[m][k] for m in metrics)} for k in keys}


def asha_replay(values: dict[str, dict[int, dict[str, float]]], modes: dict[str, str], grace: int, rf: int,
                end: int, bundle: int, reverse: bool = False) -> tuple[list[tuple[int, float]], dict[str, int]]:
    """The sweep's rung rule on recorded values: bundles of ``bundle`` members report each evaluation in turn
    (the first bundle first, or the last first with ``reverse``: live, arrival order decides). Returns
    (member-steps so far, best objective among the members at that step) per evaluation, and the step each
    member trained to."""
    from sweep.asha import Rungs

    objective = next(iter(modes))
    sign = 1.0 if modes[objective] == "min" else -1.0
    rungs = Rungs(grace, rf, end, modes)
    keys = list(values)
    trained = {k: end for k in keys}
    steps = sorted({s for v in values.values() for s in v if 0 < s <= end})
    starts = list(range(0, len(keys), bundle))
    trace = []
    for s in steps:
        for i in reversed(starts) if reverse else starts:
            items = [(k, s, values[k][s]) for k in keys[i:i + bundle] if trained[k] >= s and s in values[k]]
            for k in rungs.decide_many(items) if s < end else []:
                trained[k] = s
        alive = [k for k in keys if trained[k] >= s and s in values[k]]
        trace.append((sum(min(s, t) for t in trained.values()), min(sign * values[k][s][objective] for k in alive)))
    return trace, trained


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
    ap.add_argument("--asha", default="", help="GRACE:RF,... the sweep's scheduler to replay (e.g. 100:4,50:4)")
    ap.add_argument("--also", default="", help="metrics a member may also rank by (the scheduler's also_rank_by)")
    ap.add_argument("--bundle", type=int, default=8, help="members per bundle, in creation order")
    ap.add_argument("--reference", default="ots", help="the report's method whose mean --also value marks "
                    "'less biased'")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rungs = [int(r) for r in args.rungs.split(",")]
    sign = 1.0 if args.mode == "min" else -1.0
    report = {}
    for folder in args.folders:
        evals = member_evals(folder, args.phase)
        c = curves(evals, args.metric, sign)
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
        if args.asha:
            report[folder.name]["asha"] = replay_asha(folder, evals, args, full[-1][0], steps[-1], target, sign)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


def replay_asha(folder: Path, evals: dict[str, list[dict]], args: argparse.Namespace, full: int, end: int,
                target: float, sign: float) -> dict[str, dict]:
    """Print and return the sweep-rule replays of one folder: compute, best found, and the less-biased members
    kept (``--also``'s first metric under the reference method's mean, from ``report.json``)."""
    also = [m for m in args.also.split(",") if m]
    modes = {args.metric: args.mode, **{m: "min" for m in also}}
    values = member_values(evals, list(modes))
    less_biased = set()
    if also:
        report = json.loads((folder / "report.json").read_text())
        row = next(r for r in report["table"] if r["metric"] == also[0])
        ref = row[f"{args.reference}_mean"]
        less_biased = {k for k, v in values.items() if end in v and v[end][also[0]] < ref}
        print(f"members ending with {also[0]} below {args.reference}'s {ref:.3g}: {sorted(less_biased)}")
    out = {}
    for spec, reverse in ((s, r) for s in args.asha.split(",") for r in (False, True)):
        grace, rf = (int(x) for x in spec.split(":"))
        trace, trained = asha_replay(values, modes, grace, rf, end, args.bundle, reverse)
        kept = sorted(k for k in less_biased if trained[k] == end)
        spec = f"{spec}{' last bundle first' if reverse else ''}"
        print(f"| asha grace {grace}, rf {rf}, {'last' if reverse else 'first'} bundle first, ranked by "
              f"{', '.join(modes)} | "
              + ", ".join(f"{n}: {sign * b:.3g}" for n, b in trace)
              + f" | {trace[-1][0] / full:.0%} | {trace[-1][1] <= target} | kept to the end: "
              f"{sum(t == end for t in trained.values())}; less biased kept {len(kept)}/{len(less_biased)} |")
        out[spec] = {"trace": [[n, sign * b] for n, b in trace], "trained": trained, "less_biased_kept": kept,
                     "less_biased": sorted(less_biased)}
    return out


if __name__ == "__main__":
    main()
