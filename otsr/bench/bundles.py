"""``otsr bench --bundle``: summed member steps/s and peak memory of bundles of K configurations, next to the
best packing of solo trials (P processes side by side) on the same machine, measured in the same run.

Every measurement runs in a fresh process, so peak memory is that measurement's own and no warm cache or
thread pool carries over. The configurations are the sweeps' own: the quick sweep's GAN trial (CPU) and the
GPU lambda space's GAN trial at D = 64.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import time
from typing import Any

import torch

from otsr.bench.speed import machine_name, peak_memory_gib

# name -> (pair name, pair params, trainer settings): the quick sweep's GAN trial (search_spaces/quick_bias.yaml), the
# MLP WGAN-GP trial whose packing was measured on an H200 (8 processes: 153 steps/s), the GPU lambda space's trial
CONFIGS: dict[str, tuple[str, dict, dict]] = {
    "quick-bias-gan": ("convex-mixture", {"dim": 4},
                       {"method": "gan", "batch_size": 256, "width": 64, "critic_width": 64, "lr_critic": 1e-3,
                        "lr_schedule": "cosine", "gp": 10.0, "critic_steps": 10}),
    "mlp-gan-d16": ("convex-mixture", {"dim": 16}, {"method": "gan", "batch_size": 256, "critic_steps": 10}),
    "gpu-space-gan-d64": ("convex-mixture", {"dim": 64},
                          {"method": "gan", "batch_size": 64, "width": 256, "depth": 4, "critic_steps": 10,
                           "lr_map": 1e-4, "lr_critic": 1e-4}),
}


@dataclasses.dataclass
class Measurement:
    """One timed loop: K members, threads, member steps per second, peak memory."""

    config: str
    k: int
    threads: int
    steps_per_s: float  # summed over members
    peak_mem_gib: float


def measure(config: str, k: int, steps: int, warmup: int, device: str | None = None) -> dict[str, Any]:
    """Time ``steps`` outer steps of a bundle of ``k`` members (lambdas spread over 1e-2..1e2) in this process."""
    from otsr.pairs import make_pair
    from otsr.recipes import resolve_members
    from otsr.state import build_state

    pair_name, params, settings = CONFIGS[config]
    pair = make_pair(pair_name, **params)
    lams = [10 ** (-2 + 4 * i / max(1, k - 1)) for i in range(k)]
    members = resolve_members(pair, {**settings, "lam": lams, "device": device or "auto",
                                     "steps": warmup + steps + 1})
    state = build_state(members, pair)
    dev = state.device
    for _ in range(warmup):
        state.method.step(state)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = state.method.step(state)
    loss.sum().item()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    return {"config": config, "k": k, "threads": torch.get_num_threads(), "steps_per_s": k * steps / seconds,
            "peak_mem_gib": peak_memory_gib(dev)}


def _subprocess(config: str, k: int, threads: int, steps: int, warmup: int, device: str | None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "otsr.bench.bundles", config, str(k), str(threads), str(steps), str(warmup),
           device or ""]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)


def _read(proc: subprocess.Popen) -> dict[str, Any]:
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"bundle benchmark process failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def run_bundle_bench(configs: list[str] | None, sizes: list[int], steps: int, warmup: int,
                     device: str | None = None, pack: bool = True) -> dict[str, Any]:
    """For each configuration: bundles of each size with all threads, and solo trials packed P x (cores/P)."""
    names = configs or ["quick-bias-gan", "gpu-space-gan-d64"]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        raise ValueError(f"unknown bundle config(s) {unknown}; valid: {', '.join(CONFIGS)}")
    cores = os.cpu_count() or 1
    rows: dict[str, Any] = {}
    for name in names:
        bundles = []
        for k in sizes:
            r = _read(_subprocess(name, k, cores, max(2, steps // max(1, k // 4)), warmup, device))
            bundles.append(r)
            print(f"{name}: bundle K={k}: {r['steps_per_s']:.1f} member steps/s, peak {r['peak_mem_gib']:.2f} GiB",
                  flush=True)
        packings = []
        if pack:
            for procs in sorted({1, cores} | ({2} if cores >= 2 else set())):
                threads = max(1, cores // procs)
                outs = [_read(p) for p in [_subprocess(name, 1, threads, steps, warmup, device)
                                           for _ in range(procs)]]
                total = sum(o["steps_per_s"] for o in outs)
                packings.append({"processes": procs, "threads": threads, "steps_per_s": total,
                                 "peak_mem_gib": max(o["peak_mem_gib"] for o in outs)})
                print(f"{name}: {procs} solo process(es) x {threads} thread(s): {total:.1f} steps/s in total",
                      flush=True)
        best = max((p["steps_per_s"] for p in packings), default=float("nan"))
        rows[name] = {"bundles": bundles, "packings": packings, "best_packing": best}
    return {"date": dt.date.today().isoformat(), "machine": machine_name(device), "torch": torch.__version__,
            "cores": cores, "rows": rows}


def markdown(report: dict[str, Any]) -> str:
    """The README table: per configuration and K, summed steps/s, the ratio to the best solo packing, memory."""
    lines = [f"Measured {report['date']} on {report['machine']}, torch {report['torch']}; bundles use all "
             f"{report['cores']} cores, solo packing P processes x (cores / P) threads (best shown).", "",
             "| config | K | member steps/s | vs best solo packing | peak mem (GiB) |", "|---|---|---|---|---|"]
    for name, row in report["rows"].items():
        best = row["best_packing"]
        for p in row["packings"]:
            lines.append(f"| {name} | solo x{p['processes']} ({p['threads']} thr) | {p['steps_per_s']:.1f} | "
                         f"{p['steps_per_s'] / best:.2f}x | {p['peak_mem_gib']:.2f} |")
        for b in row["bundles"]:
            lines.append(f"| {name} | {b['k']} | {b['steps_per_s']:.1f} | {b['steps_per_s'] / best:.2f}x | "
                         f"{b['peak_mem_gib']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":  # one measurement in a fresh process: CONFIG K THREADS STEPS WARMUP [DEVICE]
    cfg_name, k_, threads_, steps_, warmup_ = sys.argv[1:6]
    torch.set_num_threads(int(threads_))
    dev_ = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] else None
    print(json.dumps(measure(cfg_name, int(k_), int(steps_), int(warmup_), dev_)))
