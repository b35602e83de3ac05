"""``otsr bench``: outer steps/s, samples/s, TFLOP/s, share of the measured matmul peak and peak memory of the
trainer loops, each timed side by side with the published loops' habits (``reference_habits``) on the same
machine, so every figure comes with a ratio.

Synthetic pairs draw random data on the device (the loop, not the data, is what is measured).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from otsr.config import TrainConfig
from otsr.pairs import ConvexMixture, Pair
from otsr.state import build_state

README_BEGIN, README_END = "<!-- bench:{suite}:begin -->", "<!-- bench:{suite}:end -->"


@dataclasses.dataclass(repr=False)
class RandomImages(Pair):
    """Uniform random images on the device: P of (3, size, size), Q of (3, size * scale, size * scale)."""

    name = "random-images"
    size: int = 64
    scale: int = 1

    @property
    def shape(self):
        """P's sample shape."""
        return (3, self.size, self.size)

    @property
    def shape_q(self):
        """Q's sample shape (larger for super-resolution)."""
        return (3, self.size * self.scale, self.size * self.scale)

    def sample_p(self, n, generator):
        """Random LR/input images."""
        return torch.rand(n, *self.shape, generator=generator, device=generator.device)

    def sample_q(self, n, generator):
        """Random target images."""
        return torch.rand(n, *self.shape_q, generator=generator, device=generator.device)

    def var_q(self):
        """Variance of U(0, 1) per pixel, summed."""
        return self.shape_q[0] * self.shape_q[1] * self.shape_q[2] / 12


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """One benchmark configuration: a pair and the trainer settings that matter for speed."""

    name: str
    pair: Any
    train: dict[str, Any]
    device: str  # 'cuda' or 'cpu'


def configs() -> dict[str, BenchConfig]:
    """The configurations of the issue: the reference setups on GPU, the MLP trainers on CPU."""
    unet = {"width": 32, "depth": 3, "map_model": "unet", "critic_model": "resnet"}
    return {c.name: c for c in [
        BenchConfig("bench-ots-b64", RandomImages(64), {"method": "ots", "batch_size": 64, "map_steps": 10, **unet},
                    "cuda"),
        BenchConfig("bench-ots-b256", RandomImages(64), {"method": "ots", "batch_size": 256, "map_steps": 10,
                                                         **unet}, "cuda"),
        BenchConfig("bench-gan-b64", RandomImages(64), {"method": "gan", "lam": 1.0, "batch_size": 64,
                                                        "critic_steps": 10, **unet}, "cuda"),
        BenchConfig("aim19-ots-b8", RandomImages(32, scale=4), {"method": "ots", "batch_size": 8, "map_steps": 15,
                                                               "width": 128, "depth": 64}, "cuda"),
        BenchConfig("cpu-mlp-ots-d16", ConvexMixture(dim=16), {"method": "ots", "batch_size": 256, "map_steps": 10},
                    "cpu"),
        BenchConfig("cpu-mlp-gan-d16", ConvexMixture(dim=16), {"method": "gan", "lam": 1.0, "batch_size": 256,
                                                               "critic_steps": 10}, "cpu"),
        BenchConfig("cpu-mlp-ots-d64", ConvexMixture(dim=64), {"method": "ots", "batch_size": 256, "map_steps": 10},
                    "cpu"),
        BenchConfig("cpu-mlp-gan-d64", ConvexMixture(dim=64), {"method": "gan", "lam": 1.0, "batch_size": 256,
                                                               "critic_steps": 10}, "cpu"),
        BenchConfig("cpu-quick-bias-gan", ConvexMixture(dim=4), {"method": "gan", "lam": 0.1, "batch_size": 256,
                                                                 "critic_steps": 10, "width": 64}, "cpu"),
    ]}


class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker: every FLOP goes to the global total."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def flop_rate(fn, flops: float, device: torch.device, seconds: float) -> float:
    """FLOP/s of ``fn`` (``flops`` per call), called for about ``seconds`` after 3 warm-up calls."""
    for _ in range(3):
        fn()
    _sync(device)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or reps < 3:
        fn()
        reps += 1
        if device.type == "cuda" and reps % 10 == 0:
            _sync(device)  # bounds the queue, so the clock sees the work
    _sync(device)
    return flops * reps / (time.perf_counter() - t0)


def matmul_peak(device: torch.device, seconds: float = 2.0, dtype: torch.dtype | None = None) -> float:
    """Measured dense matmul peak in TFLOP/s at the current thread count: bf16 on CUDA, fp32 on CPU by default."""
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return flop_rate(lambda: a @ b, 2 * n**3, device, seconds) / 1e12


def count_flops(fn) -> int:
    """Floating-point operations of ``fn()`` as ``FlopCounterMode`` counts them (matmuls and convolutions,
    forward and backward, double backward included)."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()  # per-module hooks break autograd.grad (the gradient penalty)
    with counter:
        fn()
    return counter.get_total_flops()


def time_loop(bench: BenchConfig, *, reference: bool, steps: int, warmup: int, compile: bool = False,
              device: str | None = None) -> dict[str, float]:
    """Time ``steps`` outer steps of one trainer loop (after ``warmup``); count FLOPs of one step."""
    dev = torch.device(device or bench.device)
    cfg = TrainConfig.from_dict({**bench.train, "device": str(dev), "reference_habits": reference,
                                 "compile": compile and not reference, "steps": warmup + steps + 1})
    state = build_state(cfg, bench.pair)
    step = state.method.step
    for _ in range(warmup):
        step(state)
    _sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step(state)
    loss.sum().item()  # one sync at the end: all queued work is done
    _sync(dev)
    seconds = (time.perf_counter() - t0) / steps
    flops = count_flops(lambda: step(state))
    _sync(dev)
    inner = state.method.inner_updates(cfg)
    mem = peak_memory_gib(dev)
    return {"steps_per_s": 1 / seconds, "samples_per_s": inner * cfg.batch_size / seconds,
            "tflops": flops / seconds / 1e12, "flops_per_step": flops, "peak_mem_gib": mem}


def run_suite(names: list[str], *, steps: int, warmup: int, compile: bool, device: str | None = None,
              reference: bool = True, quiet: bool = False, measure_peak: bool = True) -> dict:
    """Lean vs reference habits for each named configuration on its device; plus the matmul peaks (bf16 and fp32
    on CUDA, fp32 on CPU)."""
    all_cfgs = configs()
    rows = []
    peaks: dict[str, float] = {}
    fp32_peaks: dict[str, float] = {}
    for name in names:
        bench = all_cfgs[name]
        dev = torch.device(device or bench.device)
        key = str(dev)
        if key not in peaks:
            peaks[key] = matmul_peak(dev) if measure_peak else float("nan")
            fp32_peaks[key] = (matmul_peak(dev, dtype=torch.float32) if measure_peak and dev.type == "cuda"
                               else peaks[key])
        lean = time_loop(bench, reference=False, steps=steps, warmup=warmup, compile=compile, device=device)
        ref = time_loop(bench, reference=True, steps=steps, warmup=warmup, device=device) if reference else lean
        rows.append({"config": name, "device": key, "lean": lean, "reference": ref,
                     "speedup": lean["steps_per_s"] / ref["steps_per_s"],
                     "peak_share": lean["tflops"] / peaks[key], "fp32_peak_share": lean["tflops"] / fp32_peaks[key]})
        if not quiet:
            print(format_row(rows[-1]), flush=True)
    return {"date": dt.date.today().isoformat(), "machine": machine_name(device), "torch": torch.__version__,
            "peaks_tflops": peaks, "peaks_fp32_tflops": fp32_peaks, "compile": compile, "steps": steps, "rows": rows}


def peak_memory_gib(device: torch.device) -> float:
    """Peak GPU allocator memory, or the process's max RSS on CPU (GiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def machine_name(device: str | None) -> str:
    """GPU name, or CPU model and core count."""
    if (device or "").startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


def format_row(r: dict) -> str:
    """One printed line per configuration."""
    lean, ref = r["lean"], r["reference"]
    return (f"{r['config']:<20} {r['device']:<5} lean {lean['steps_per_s']:8.2f} steps/s "
            f"{lean['samples_per_s']:10.0f} samples/s {lean['tflops']:8.3f} TFLOP/s ({100 * r['peak_share']:.1f}% "
            f"of peak) {lean['peak_mem_gib']:.2f} GiB | reference {ref['steps_per_s']:8.2f} steps/s | "
            f"x{r['speedup']:.2f}")


def markdown(report: dict) -> str:
    """The results table for README; on CUDA a second share column against the fp32 matmul peak."""
    peaks = ", ".join(f"{k}: {v:.2f}" for k, v in report["peaks_tflops"].items())
    fp32 = report.get("peaks_fp32_tflops", {})
    gpu = any(k.startswith("cuda") for k in fp32)
    if gpu:
        peaks += "; fp32: " + ", ".join(f"{k}: {v:.2f}" for k, v in fp32.items())
    lines = [f"Measured {report['date']} on {report['machine']}, torch {report['torch']}, {report['steps']} timed "
             f"outer steps, torch.compile {'on' if report['compile'] else 'off'}; matmul peak (TFLOP/s; bf16 on "
             f"CUDA, fp32 on CPU) {peaks}.", "",
             "| config | lean steps/s | samples/s | TFLOP/s |" + (" % of bf16 peak | % of fp32 peak |" if gpu
                                                                    else " % of peak |")
             + " peak mem (GiB) | reference steps/s | speed-up |", "|---|---|---|---|---|" + ("---|" if gpu else "")
             + "---|---|---|"]
    for r in report["rows"]:
        lean, ref = r["lean"], r["reference"]
        fp32_share = f" {100 * r.get('fp32_peak_share', float('nan')):.1f} |" if gpu else ""
        lines.append(f"| {r['config']} | {lean['steps_per_s']:.2f} | {lean['samples_per_s']:.0f} | "
                     f"{lean['tflops']:.3f} | {100 * r['peak_share']:.1f} |{fp32_share} {lean['peak_mem_gib']:.2f} | "
                     f"{ref['steps_per_s']:.2f} | {r['speedup']:.2f}x |")
    return "\n".join(lines)


def write_readme(readme: Path, suite: str, table: str) -> None:
    """Replace the text between this suite's markers in README (markers are added at the end if missing)."""
    begin, end = README_BEGIN.format(suite=suite), README_END.format(suite=suite)
    text = readme.read_text()
    block = f"{begin}\n{table}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n{block}\n"
    readme.write_text(text)


def pack(name: str, k: int, threads: int, steps: int, warmup: int, device: str | None = None) -> dict[str, float]:
    """Aggregate throughput of ``k`` processes running the same configuration at once (``threads`` each)."""
    cmd = [sys.executable, "-m", "otsr.cli", "bench", "--config", name, "--steps", str(steps), "--warmup",
           str(warmup), "--threads", str(threads), "--json", "--no-reference", "--no-peak",
           *(["--device", device] if device else [])]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(k)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    rates = [o["rows"][0]["lean"]["steps_per_s"] for o in outs]
    return {"trials": k, "threads": threads, "total_steps_per_s": sum(rates), "per_trial_steps_per_s": min(rates)}


def loader_throughput(root: str, crop: int, workers: int, crops_per_image: int, batches: int = 30,
                      batch: int = 64) -> dict[str, float]:
    """Crops/s and decoded images/s of the SR crop stream (HR folder ``train_hr`` of ``root``)."""
    from otsr.sr.data import CropStream, list_images
    from otsr.sr.demo import build_demo, default_demo_root

    folder = build_demo(default_demo_root()) if root == "demo" else Path(root)
    stream = CropStream(list_images(folder / "train_hr"), crop, workers=workers, crops_per_image=crops_per_image,
                        batch=batch)
    stream.take(batch, "cpu")  # start the workers
    t0 = time.perf_counter()
    for _ in range(batches):
        stream.take(batch, "cuda" if torch.cuda.is_available() else "cpu")
    dt_s = time.perf_counter() - t0
    crops = batches * batch / dt_s
    return {"workers": workers, "crop": crop, "crops_per_s": crops, "images_per_s": crops / crops_per_image}
