"""``otsr bench --bundle``: summed member steps/s, achieved GFLOP/s and peak memory of bundles of K configurations,
next to the best packing of solo trials (P processes side by side) on the same machine, measured in the same run.

Every measurement runs in a fresh process, so peak memory is that measurement's own and no warm cache or
thread pool carries over. The configurations are the sweeps' own: the quick sweep's GAN trial (CPU) and the
GPU lambda space's GAN trial at D = 64.

FLOPs are those of one real outer step as ``FlopCounterMode`` counts them (matmuls: every inner update, the map
update, the gradient penalty's double backward). Two limits put them in scale, both at the thread count in use:
a large matmul (fp32; bf16 too on CUDA), measured once per run, and ``torch.baddbmm`` over the step's own
dense-layer calls (K, batch, fan_in) x (K, fan_in, fan_out), measured with each bundle.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import torch

from otsr.bench.speed import count_flops, flop_rate, machine_name, matmul_peak, peak_memory_gib
from otsr.models import Linear

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
    """One timed loop: K members, threads, member steps per second, FLOPs, peak memory."""

    config: str
    k: int
    threads: int
    steps_per_s: float  # summed over members
    peak_mem_gib: float
    flops_per_step: int  # one outer step of the whole bundle
    gflops: float  # achieved: flops_per_step x outer steps/s
    bmm_limit_gflops: float | None  # baddbmm over the step's dense-layer calls; None when not measured
    dense_calls: list[list[int]]  # [K, batch, fan_in, fan_out, calls per step]


def count_step(state) -> tuple[int, Counter]:
    """FLOPs of one outer step and the (K, batch, fan_in, fan_out) of each dense-layer call in it (with counts)."""
    calls: Counter = Counter()

    def record(layer, args):
        k, fan_in, fan_out = layer.weight.shape
        calls[(k, args[0].shape[-2], fan_in, fan_out)] += 1

    layers = [m for net in (state.map, state.critic) for m in net.modules() if isinstance(m, Linear)]
    hooks = [m.register_forward_pre_hook(record) for m in layers]  # forward only: no autograd hooks
    try:
        flops = count_flops(lambda: state.method.step(state))
    finally:
        for h in hooks:
            h.remove()
    return flops, calls


def bmm_limit(calls: Counter, device: torch.device, seconds: float) -> float:
    """FLOP/s of ``torch.baddbmm`` (fp32) on the given dense-layer shapes, each as often as a step calls it."""
    ops = [(torch.randn(k, 1, o, device=device), torch.randn(k, b, i, device=device),
            torch.randn(k, i, o, device=device), n) for (k, b, i, o), n in calls.items()]

    def rep():
        for bias, x, w, n in ops:
            for _ in range(n):
                torch.baddbmm(bias, x, w)

    return flop_rate(rep, sum(2 * k * b * i * o * n for (k, b, i, o), n in calls.items()), device, seconds)


def measure(config: str, k: int, steps: int, warmup: int, device: str | None = None,
            limit_seconds: float = 1.0) -> dict[str, Any]:
    """Time ``steps`` outer steps of a bundle of ``k`` members (lambdas spread over 1e-2..1e2) in this process,
    count one more step's FLOPs and (``limit_seconds`` > 0) time baddbmm on its dense-layer shapes."""
    from otsr.pairs import make_pair
    from otsr.recipes import resolve_members
    from otsr.state import build_state

    pair_name, params, settings = CONFIGS[config]
    pair = make_pair(pair_name, **params)
    lams = [10 ** (-2 + 4 * i / max(1, k - 1)) for i in range(k)]
    members = resolve_members(pair, {**settings, "lam": lams, "device": device or "auto",
                                     "steps": warmup + steps + 2})
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
    mem = peak_memory_gib(dev)
    flops, calls = count_step(state)
    limit = bmm_limit(calls, dev, limit_seconds) / 1e9 if limit_seconds > 0 and calls else None
    return dataclasses.asdict(Measurement(
        config, k, torch.get_num_threads(), k * steps / seconds, mem, flops, flops * steps / seconds / 1e9, limit,
        [[*shape, n] for shape, n in sorted(calls.items())]))


def measure_peaks(device: str | None, seconds: float) -> dict[str, float | None]:
    """The large-matmul limits in GFLOP/s at this process's threads: fp32, and bf16 on CUDA (else None)."""
    from otsr.runtime import resolve_device

    dev = resolve_device(device or "auto")
    return {"matmul_fp32_gflops": 1e3 * matmul_peak(dev, seconds, torch.float32),
            "matmul_bf16_gflops": 1e3 * matmul_peak(dev, seconds, torch.bfloat16) if dev.type == "cuda" else None}


def _subprocess(threads: int, *args: Any) -> subprocess.Popen:
    """``python -m otsr.bench.bundles ARGS...`` with ``threads`` threads; its last stdout line is the JSON."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "otsr.bench.bundles", *(str(a) for a in args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)


def _measure(config: str, k: int, threads: int, steps: int, warmup: int, device: str | None,
             limit_seconds: float) -> subprocess.Popen:
    return _subprocess(threads, config, k, threads, steps, warmup, device or "", limit_seconds)


def _read(proc: subprocess.Popen) -> dict[str, Any]:
    out, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"bundle benchmark process failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def _share(gflops: float, limit: float | None) -> str:
    return f"{100 * gflops / limit:.1f}" if limit else "–"


def run_bundle_bench(configs: list[str] | None, sizes: list[int], steps: int, warmup: int,
                     device: str | None = None, pack: bool = True, limit_seconds: float = 1.0,
                     threads: int | None = None) -> dict[str, Any]:
    """For each configuration: bundles of each size on ``threads`` threads (None: every core), and solo trials
    packed P x (threads/P); the matmul peaks first (``limit_seconds`` <= 0: no limits are measured)."""
    names = configs or ["quick-bias-gan", "gpu-space-gan-d64"]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        raise ValueError(f"unknown bundle config(s) {unknown}; valid: {', '.join(CONFIGS)}")
    cores = threads or os.cpu_count() or 1
    peaks = {"matmul_fp32_gflops": None, "matmul_bf16_gflops": None}
    if limit_seconds > 0:
        peaks = _read(_subprocess(cores, "peaks", device or "", 2 * limit_seconds))
        print(f"matmul peak ({cores} threads): fp32 {peaks['matmul_fp32_gflops']:.1f} GFLOP/s"
              + (f", bf16 {peaks['matmul_bf16_gflops']:.1f}" if peaks["matmul_bf16_gflops"] else ""), flush=True)
    rows: dict[str, Any] = {}
    for name in names:
        bundles = []
        for k in sizes:
            r = _read(_measure(name, k, cores, max(2, steps // max(1, k // 4)), warmup, device, limit_seconds))
            bundles.append(r)
            print(f"{name}: bundle K={k}: {r['steps_per_s']:.1f} member steps/s, {r['gflops']:.2f} GFLOP/s "
                  f"({_share(r['gflops'], peaks['matmul_fp32_gflops'])}% of the fp32 matmul peak, "
                  f"{_share(r['gflops'], r['bmm_limit_gflops'])}% of the batched-matmul limit), "
                  f"peak {r['peak_mem_gib']:.2f} GiB", flush=True)
        packings = []
        if pack:
            for procs in sorted({1, cores} | ({2} if cores >= 2 else set())):
                per = max(1, cores // procs)
                outs = [_read(p) for p in [_measure(name, 1, per, steps, warmup, device, 0)
                                           for _ in range(procs)]]
                total = sum(o["steps_per_s"] for o in outs)
                gflops = sum(o["gflops"] for o in outs)
                packings.append({"processes": procs, "threads": per, "steps_per_s": total,
                                 "peak_mem_gib": max(o["peak_mem_gib"] for o in outs), "gflops": gflops})
                print(f"{name}: {procs} solo process(es) x {per} thread(s): {total:.1f} steps/s in total, "
                      f"{gflops:.2f} GFLOP/s", flush=True)
        best = max((p["steps_per_s"] for p in packings), default=None)  # None: --no-pack
        rows[name] = {"bundles": bundles, "packings": packings, "best_packing": best}
    return {"date": dt.date.today().isoformat(), "machine": machine_name(device), "torch": torch.__version__,
            "cores": cores, **peaks, "rows": rows}


def markdown(report: dict[str, Any]) -> str:
    """The README table: per configuration and K, summed steps/s, the ratio to the best solo packing, achieved
    GFLOP/s and its share of the matmul peak(s) and of the batched-matmul limit of the bundle's own shapes, memory."""
    fp32, bf16 = report.get("matmul_fp32_gflops"), report.get("matmul_bf16_gflops")
    limits = (f"; matmul peak at {report['cores']} threads: fp32 {fp32:.1f} GFLOP/s" if fp32 else "") + (
        f", bf16 {bf16:.1f} GFLOP/s" if bf16 else "")
    lines = [f"Measured {report['date']} on {report['machine']}, torch {report['torch']}; bundles use "
             f"{report['cores']} thread(s), solo packing P processes x ({report['cores']} / P) threads (best shown)"
             f"{limits}.", "",
             "| config | K | member steps/s | vs best solo packing | GFLOP/s | % of matmul peak |"
             + (" % of bf16 peak |" if bf16 else "") + " % of batched-matmul limit | peak mem (GiB) |",
             "|---|---|---|---|---|---|" + ("---|" if bf16 else "") + "---|---|"]

    def gflop_cells(r: dict, bmm: float | None) -> str:
        g = r.get("gflops")
        if g is None:  # a report from before FLOPs were counted
            return "– | – |" + (" – |" if bf16 else "") + " – |"
        return (f"{g:.2f} | {_share(g, fp32)} |" + (f" {_share(g, bf16)} |" if bf16 else "")
                + f" {_share(g, bmm)} |")

    for name, row in report["rows"].items():
        best = row["best_packing"]
        for p in row["packings"]:
            lines.append(f"| {name} | solo x{p['processes']} ({p['threads']} thr) | {p['steps_per_s']:.1f} | "
                         f"{p['steps_per_s'] / best:.2f}x | {gflop_cells(p, None)} {p['peak_mem_gib']:.2f} |")
        for b in row["bundles"]:
            ratio = f"{b['steps_per_s'] / best:.2f}x" if best else "–"  # no packing measured
            lines.append(f"| {name} | {b['k']} | {b['steps_per_s']:.1f} | {ratio} | "
                         f"{gflop_cells(b, b.get('bmm_limit_gflops'))} {b['peak_mem_gib']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":  # one measurement in a fresh process, its JSON on the last line of stdout:
    # CONFIG K THREADS STEPS WARMUP DEVICE LIMIT_SECONDS (DEVICE '' = auto), or: peaks DEVICE SECONDS
    if sys.argv[1] == "peaks":
        print(json.dumps(measure_peaks(sys.argv[2] or None, float(sys.argv[3]))))
    else:
        cfg_name, k_, threads_, steps_, warmup_, dev_, limit_ = sys.argv[1:8]
        torch.set_num_threads(int(threads_))
        print(json.dumps(measure(cfg_name, int(k_), int(steps_), int(warmup_), dev_ or None, float(limit_))))
