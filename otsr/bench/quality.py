"""``otsr bench --quality``: train OTS and the lambda-GAN with the default recipe on pairs of two constructions
(``convex-mixture`` and the benchmark-style ``icnn-mixture``) at several dimensions, and print what they learned
next to the best affine map and the identity, so a recipe or speed change is judged by the answer on pairs it was
not tuned on. Published Wasserstein-2 benchmark figures are shown for orientation only: they were measured on the
benchmark's own pairs, not these.

Each result is stored in a JSON file as soon as it finishes (with its evaluation curve, the date and the code's
commit), and the README table is written from that file. A run trains in its own folder next to the JSON and
checkpoints there, so a bench stopped mid-run (a D = 128 row takes hours on a CPU) continues from the run's last
checkpoint, with its CPU seconds carried over.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from otsr.bench.speed import machine_name, write_readme
from otsr.checkpoint import CHECKPOINT_NAME, atomic_write_json, load_checkpoint
from otsr.config import TrainConfig
from otsr.evaluation import evaluate, probe_map
from otsr.methods import comparison_methods
from otsr.pairs import best_affine_l2_uvp, make_pair
from otsr.provenance import code_version
from otsr.recipes import resolve_config, resolve_members
from otsr.trainers import train, train_bundle

DIMS = (16, 64)
# (family, seed): convex-mixture seed 0 (the pair the recipe was first tuned on) and icnn-mixture seeds 1-3, which
# were not looked at while tuning (icnn-mixture seed 0 was); see README "OTS at scale".
PAIRS = (("convex-mixture", 0), ("icnn-mixture", 1), ("icnn-mixture", 2), ("icnn-mixture", 3))
GAN_PAIRS = (("convex-mixture", 0), ("icnn-mixture", 1))  # the GAN's lambda sweep costs 1.6x an OTS run
GAN_LAMBDAS = (0.01, 0.1, 1.0)  # the small lambda sweep (one bundle); its winner gets the full budget
SWEEP_SHARE = 0.2  # the sweep's members train this share of the full budget
# Published L2-UVP (%) on the Wasserstein-2 benchmark's own high-dimensional pairs (50k iterations, batch 1024,
# GPU): the reversed max-min solver (the OTS form), the best of all solvers, GAN-style solvers, the linear baseline.
PUBLISHED = {16: (1.9, 1.4, 6.4, 41.6), 64: (4.5, 3.2, 13.9, 63.9), 128: (None, 2.0, 19.0, 63.6)}
METRICS = ("l2_uvp", "cos", "bias_sliced_w2", "bias_mean_shift", "bias_frechet", "ot_consistency")  # after the headline


@dataclasses.dataclass
class QualityOptions:
    """What to run: pairs (family, seed), dimensions, a budget factor on the recipe's steps, device, methods."""

    dims: tuple[int, ...] = DIMS
    budget: float = 1.0  # multiplies the recipe's outer steps (0.1: a quick look, not the README figures)
    device: str = "auto"
    methods: tuple[str, ...] = ("ots", "gan")
    lambdas: tuple[float, ...] = GAN_LAMBDAS
    pairs: tuple[tuple[str, int], ...] = PAIRS
    gan_pairs: tuple[tuple[str, int], ...] = GAN_PAIRS
    redo: bool = False  # measure the chosen rows again (their stored results and run folders are dropped first)


def parse_pairs(text: str) -> tuple[tuple[str, int], ...]:
    """'convex-mixture:0,icnn-mixture:1' -> ((family, seed), ...); a family alone means seed 0."""
    out = []
    for item in text.split(","):
        name, _, seed = item.partition(":")
        out.append((name.strip(), int(seed) if seed else 0))
    return tuple(out)


def bench_metrics(pair) -> tuple[str, ...]:
    """What a row keeps: the pair's headline metrics (``Pair.headline``), then the other views in METRICS."""
    return tuple(dict.fromkeys([*pair.headline().names(), *METRICS]))


def curve_keys(pair) -> tuple[str, ...]:
    """What a row's curve keeps at each evaluation: the headline's accuracy and bias, and ``map_change``."""
    head = pair.headline()
    return tuple(k for k in ("step", head.accuracy, head.bias, "map_change") if k)


def _row(res, cfg, wall: float, pair, code: str | None = None) -> dict[str, Any]:
    out = {"status": res.status, "steps": res.step, "seconds": round(wall, 1), "config": cfg.to_dict(),
           "precision": res.precision, "curve": [{k: e.get(k) for k in curve_keys(pair)} for e in res.evals],
           "bias_metric": pair.headline().bias, "date": dt.date.today().isoformat(),
           "code": code or code_version(),
           "machine": machine_name(cfg.device if cfg.device != "auto" else None).split(",")[0]}
    out.update({k: res.metrics.get(k, math.nan) for k in bench_metrics(pair)})
    return out


IDENTITY_FREE = ("device", "log_every", "compile")  # where and how visibly a run computes, not what it computes


class _CpuLedger:
    """CPU seconds of a run that may span several processes: the total at each checkpoint (and at the end), so a
    continued run adds its own seconds to those spent up to the checkpoint it resumed from (what came after it is
    redone); also the commits the run's processes ran on."""

    def __init__(self, folder: Path, start_step: int):
        self.path = folder / "cpu_seconds.json"
        stored = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.at = {int(k): v for k, v in stored.items() if k.isdigit()}
        now = code_version()
        self.code = [c for c in stored.get("code", []) if c != now] + [now]
        self.base = max(((k, v) for k, v in self.at.items() if k <= start_step), default=(0, 0.0))[1]
        self.t0 = time.process_time()

    def total(self) -> float:
        return self.base + time.process_time() - self.t0

    def note(self, step: int) -> None:
        self.at[step] = self.total()
        atomic_write_json(self.path, {**{str(k): v for k, v in self.at.items()}, "code": self.code})


def _check_resume(folder: Path, stored: dict[str, Any], cfg: TrainConfig) -> None:
    """Refuse to continue a run whose checkpoint computes something else, naming the keys that differ."""
    have = TrainConfig.from_stored(stored).to_dict()
    want = cfg.to_dict()
    differ = [k for k in want if k not in IDENTITY_FREE and have.get(k) != want[k]]
    if differ:
        raise ValueError(f"{folder}: its checkpoint has " + ", ".join(f"{k}={have.get(k)!r}" for k in differ)
                         + " where this bench wants " + ", ".join(f"{k}={want[k]!r}" for k in differ)
                         + "; pass --redo to start the run again")


def _train(pair, method: str, steps: int, device: str, folder: Path | None = None, **extra) -> dict[str, Any]:
    """Train one run; with ``folder``, checkpoint there (every tenth of the run) and continue from its checkpoint
    if one is there."""
    cfg = resolve_config(pair, {"method": method, "device": device, **extra})
    cfg = cfg.replace(steps=steps, eval_every=max(1, steps // 8), checkpoint_every=max(1, steps // 10))
    if folder is None:
        t0 = time.process_time()
        res = train(cfg, pair)
        return _row(res, cfg, time.process_time() - t0, pair)
    resume = load_checkpoint(folder) if (folder / CHECKPOINT_NAME).exists() else None
    if resume is not None:
        _check_resume(folder, resume["config"], cfg)
    ledger = _CpuLedger(folder, int(resume["step"]) if resume else 0)
    if resume is not None:
        print(f"quality: continuing {folder} from step {resume['step']} of {steps} ({ledger.base:.0f} CPU s so far)",
              flush=True)

    def on_log(step: int, _row) -> None:
        if step % cfg.checkpoint_every == 0:
            ledger.note(step)

    res = train(cfg, pair, resume=resume, out_dir=folder, on_log=on_log)
    ledger.note(res.step)  # a run that ends but is not yet in the results file keeps its seconds
    return _row(res, cfg, ledger.total(), pair, code=" + ".join(ledger.code))


def _gan_sweep(pair, lambdas, steps: int, device: str) -> dict[str, dict[str, Any]]:
    """The lambda sweep as one bundle (members share the cost of one process)."""
    members = resolve_members(pair, {"method": "gan", "device": device, "lam": list(lambdas)})
    members = [m.replace(steps=steps, eval_every=max(1, steps // 4)) for m in members]
    t0 = time.process_time()
    results = train_bundle(members, pair)
    wall = (time.process_time() - t0) / len(members)
    return {str(lam): _row(r, m, wall, pair) for lam, r, m in zip(lambdas, results, members)}


def run_pair(family: str, seed: int, dim: int, opts: QualityOptions, row: dict[str, Any], save,
             runs: Path | None = None) -> None:
    """Fill ``row`` (affine and identity baselines, OTS, GAN sweep and best GAN), saving after each piece; OTS and
    the best GAN train in folders under ``runs`` (resumable), when given."""
    pair = make_pair(family, dim=dim, seed=seed)
    folder = (lambda method: run_folder(runs, family, seed, dim, method)) if runs is not None else (lambda m: None)
    if "affine_l2_uvp" not in row:
        row["affine_l2_uvp"] = best_affine_l2_uvp(pair)
        row["identity"] = {k: v for k, v in evaluate(probe_map(pair), pair, n=1 << 14, cost="mean").items()
                           if k in bench_metrics(pair)}
        save()
    steps = max(1, round(resolve_config(pair, {"method": "ots"}).steps * opts.budget))
    if "ots" in opts.methods and "ots" not in row:
        row["ots"] = _train(pair, "ots", steps, opts.device, folder("ots"))
        save()
    if "gan" in opts.methods and (family, seed) in opts.gan_pairs:
        gan_steps = max(1, round(resolve_config(pair, {"method": "gan"}).steps * opts.budget))
        if "gan_sweep" not in row:
            row["gan_sweep"] = _gan_sweep(pair, opts.lambdas, max(1, round(gan_steps * SWEEP_SHARE)), opts.device)
            save()
        if "gan" not in row:
            sweep = row["gan_sweep"]
            ok = {k: v for k, v in sweep.items() if v["status"] == "completed" and math.isfinite(v["l2_uvp"])}
            if ok:
                best = min(ok, key=lambda k: ok[k]["l2_uvp"])
                row["gan"] = {**_train(pair, "gan", gan_steps, opts.device, folder("gan"), lam=float(best)),
                              "lam": float(best)}
                save()


def _drop(row: dict[str, Any], opts: QualityOptions, runs: Path, family: str, seed: int, dim: int) -> None:
    """Forget a row's results of the chosen methods (a method's sweep included) and their run folders, so they are
    measured again."""
    for method in opts.methods:
        for key in (method, f"{method}_sweep"):
            row.pop(key, None)
        shutil.rmtree(run_folder(runs, family, seed, dim, method), ignore_errors=True)


def runs_folder(out: Path) -> Path:
    """Where the runs of the results file ``out`` train: ``NAME.runs/`` beside it."""
    return out.with_name(out.stem + ".runs")


def run_folder(runs: Path, family: str, seed: int, dim: int, method: str) -> Path:
    """One run's folder under ``runs``."""
    return runs / f"{family}-{seed}-d{dim}-{method}"


def run_quality(opts: QualityOptions, out: Path, quiet: bool = False) -> dict[str, Any]:
    """Run (or continue) the quality benchmark, storing results in ``out`` (JSON) and runs under ``runs_folder``."""
    results = json.loads(out.read_text()) if out.exists() else {}
    runs = runs_folder(out)
    results.setdefault("torch", torch.__version__)
    results.setdefault("threads", torch.get_num_threads())
    results["date"] = dt.date.today().isoformat()
    pairs = results.setdefault("pairs", {})

    def save():
        atomic_write_json(out, results)

    for d in opts.dims:
        for family, seed in opts.pairs:
            row = pairs.setdefault(f"{family}:{seed}", {}).setdefault(str(d), {})
            if opts.redo:
                _drop(row, opts, runs, family, seed, d)
            run_pair(family, seed, d, opts, row, save, runs)
            if not quiet:
                print(markdown(results, only=(f"{family}:{seed}", str(d)), header=False), flush=True)
    save()
    return results


def _fmt(v, spec: str = ".2f") -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _measured(r: dict[str, Any]) -> str:
    """'2026-12-07, 2cf433d, AMD EPYC': the row's date, the commit it ran on (short; '+dirty' kept), the machine."""
    code = str(r.get("code", "–"))
    sha, plus, rest = code.partition("+")
    short = sha[:7] if len(sha) == 40 else sha
    where = f", {r['machine']}" if r.get("machine") else ""
    return f"{r.get('date', '–')}, {short}{plus}{rest}{where}"


def _rows(results: dict[str, Any]):
    for name in results.get("pairs", {}):
        for d in sorted(results["pairs"][name], key=int):
            yield name, d, results["pairs"][name][d]


def markdown(results: dict[str, Any], only: tuple[str, str] | None = None, header: bool = True) -> str:
    """The README table: per pair and dimension, OTS and the best-lambda GAN next to the affine map and identity."""
    lines = []
    if header:
        lines += [f"{results.get('threads')} thread(s) per run, torch {results.get('torch')} (last run "
                  f"{results.get('date')}; each row says when, on which commit and on "
                  f"which machine it was measured, so compare CPU seconds only between rows of one machine); L2-UVP "
                  f"on 2^14 samples (lower is better), bias = sliced W2 of T#P to Q (lower is better); CPU seconds of "
                  f"the run.", "",
                  "| pair (seed) | D | method | steps | CPU s | L2-UVP % | cos | bias (sliced W2) | OT-consistency "
                  "| best affine % | identity % | measured |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, d, row in _rows(results):
        if only and (name, d) != only:
            continue
        family, _, seed = name.partition(":")
        for m in comparison_methods():
            r = row.get(m.name)
            if not r:
                continue
            lines.append(f"| {family} ({seed}) | {d} | {m.label(r)} | {r['steps']} | {r['seconds']:.0f} | "
                         f"{_fmt(r['l2_uvp'])} | {_fmt(r['cos'], '.3f')} | "
                         f"{_fmt(r[r.get('bias_metric', 'bias_sliced_w2')], '.3f')} | "
                         f"{_fmt(r['ot_consistency'], '.3f')} | {_fmt(row.get('affine_l2_uvp'), '.1f')} | "
                         f"{_fmt((row.get('identity') or {}).get('l2_uvp'), '.0f')} | {_measured(r)} |")
    return "\n".join(lines)


def sweep_markdown(results: dict[str, Any]) -> str:
    """The GAN lambda sweeps: L2-UVP and bias at each lambda, per pair and dimension."""
    lines = ["| pair (seed) | D | λ | steps | L2-UVP % | bias (sliced W2) |", "|---|---|---|---|---|---|"]
    for name, d, row in _rows(results):
        for lam, r in sorted(row.get("gan_sweep", {}).items(), key=lambda kv: float(kv[0])):
            family, _, seed = name.partition(":")
            lines.append(f"| {family} ({seed}) | {d} | {float(lam):g} | {r['steps']} | {_fmt(r['l2_uvp'])} | "
                         f"{_fmt(r[r.get('bias_metric', 'bias_sliced_w2')], '.3f')} |")
    return "\n".join(lines)


def published_markdown() -> str:
    """The published figures, labelled as the benchmark's own pairs (orientation, not a comparison)."""
    lines = ["Published on the Wasserstein-2 benchmark's own pairs (not the pairs above; 50k iterations, batch 1024, "
             "GPU), L2-UVP %:", "", "| D | max-min OTS form | best solver | GAN-style | linear |",
             "|---|---|---|---|---|"]
    for d, vals in PUBLISHED.items():
        lines.append(f"| {d} | " + " | ".join(_fmt(v, ".1f") for v in vals) + " |")
    return "\n".join(lines)


def write_quality_readme(readme: Path, results: dict[str, Any]) -> None:
    """Write the tables between the ``quality`` markers of README."""
    write_readme(readme, "quality", markdown(results) + "\n\nThe GAN's λ sweep (one bundle; its best λ got the full "
                 "budget):\n\n" + sweep_markdown(results) + "\n\n" + published_markdown())
