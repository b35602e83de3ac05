"""``otsr``: train one map on one pair (``otsr train``), list the pairs (``otsr pairs``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

import otsr
from otsr.checkpoint import load_checkpoint
from otsr.config import LR_SCHEDULES, METHODS, PRECISIONS, WARM_STARTS, TrainConfig
from otsr.costs import COSTS
from otsr.models import CRITICS, MAPS
from otsr.pairs import PairSpec, make_pair, pair_class, pair_names, pair_parameters
from otsr.recipes import resolve_config
from otsr.trainers import TRAINERS

EXIT_BAD_INPUT, EXIT_DIVERGED = 2, 3
CHOICES = {"method": METHODS, "cost": COSTS, "lr_schedule": LR_SCHEDULES, "precision": PRECISIONS,
           "warm_start": WARM_STARTS, "map_model": ("auto", *MAPS), "critic_model": ("auto", *CRITICS)}
# A resumed run keeps what defines it: changing one of these is an error naming both values.
RESUME_FIXED = ("method", "cost", "lam", "map_model", "critic_model", "width", "depth", "warm_start", "seed")


def _parse_value(text: str, like: Any, what: str) -> Any:
    """Parse ``text`` to the type of the default ``like``; 'true'/'false' for booleans (never truthy strings)."""
    try:
        if isinstance(like, bool):
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            return float(text)
        return text
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a valid {type(like).__name__}") from None


def _pair_params(name: str, args: argparse.Namespace) -> dict[str, Any]:
    defaults = pair_parameters(name)
    params: dict[str, Any] = {}
    for item in args.pair_param or []:
        if "=" not in item:
            raise ValueError(f"--pair-param {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        if k not in defaults:
            raise ValueError(f"pair {name!r}: unknown parameter {k!r}; valid: {sorted(defaults)}")
        params[k] = _parse_value(v, defaults[k], f"pair parameter {k!r}")
    if args.dim is not None:
        key = "dim" if "dim" in defaults else "size" if "size" in defaults else None
        if key is None:
            raise ValueError(f"pair {name!r} has no dimension parameter; use --pair-param")
        params[key] = args.dim
    return params


def _config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
            if getattr(args, f.name, None) is not None}


class _Bar:
    """A one-line text progress bar on stderr, redrawn at each loss readout."""

    def __init__(self, total: int, start: int):
        self.total, self.start, self.t0 = total, start, time.perf_counter()

    def __call__(self, step: int, losses: dict[str, float]) -> None:
        frac = step / self.total
        rate = (step - self.start) / max(time.perf_counter() - self.t0, 1e-9)
        bar = "#" * int(30 * frac)
        print(f"\r[{bar:<30}] {step}/{self.total} {rate:.1f} it/s  critic {losses['loss_critic']:+.4g}"
              f"  map {losses['loss_map']:+.4g}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        print(file=sys.stderr)


def _resume(args: argparse.Namespace) -> tuple[dict, TrainConfig, object]:
    """Checkpoint, config and pair of ``--resume DIR``; flags that would change the run's identity are refused."""
    ckpt = load_checkpoint(Path(args.resume))
    overrides = _config_overrides(args)
    for key in RESUME_FIXED:
        if key in overrides and overrides[key] != ckpt["config"].get(key):
            raise ValueError(f"--resume {args.resume}: the run has {key}={ckpt['config'].get(key)!r}; "
                             f"--{key.replace('_', '-')} {overrides[key]!r} would change it (start a new --out)")
    spec = PairSpec.from_dict(ckpt["pair"], f"checkpoint {args.resume}: pair")
    if args.pair is not None and args.pair != spec.name:
        raise ValueError(f"--resume {args.resume}: the run is on pair {spec.name!r}; --pair {args.pair!r} would "
                         f"change it (start a new --out)")
    if args.dim is not None or args.pair_param:
        raise ValueError(f"--resume {args.resume}: pair parameters come from the checkpoint "
                         f"({spec.describe()}); --dim/--pair-param cannot change them")
    return ckpt, TrainConfig.from_dict({**ckpt["config"], **overrides}), spec.build()


def cmd_train(args: argparse.Namespace) -> int:
    """Build everything (failing fast on bad input), train, print the final metrics as JSON."""
    resume = None
    if args.resume:
        out = Path(args.resume)
        resume, cfg, pair = _resume(args)
    else:
        if not args.out:
            raise ValueError("--out DIR is required (or --resume DIR)")
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file, not a folder")
        if (out / "metrics.json").exists() and not args.overwrite:
            raise ValueError(f"{out} already holds a completed run; pass --overwrite or another --out")
        name = args.pair or "gaussian-shift"
        pair = make_pair(name, **_pair_params(name, args))
        cfg = resolve_config(pair, _config_overrides(args))
    bar = _Bar(cfg.steps, int(resume["step"]) if resume else 0)
    result = TRAINERS[cfg.method](cfg, pair, resume=resume, out_dir=out, on_log=bar)
    bar.close()
    print(json.dumps({**result.summary(), "out": str(out)}, indent=2))
    return EXIT_DIVERGED if result.diverged else 0


def cmd_pairs(args: argparse.Namespace) -> int:
    """Print each registered pair with its parameters and defaults."""
    for name in pair_names():
        cls = pair_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name}: {doc}")
        lo, hi = cls.dim_range
        print(f"    dimension range: [{lo}, {hi}]")
        for k, v in pair_parameters(name).items():
            print(f"    {k} = {v!r}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmark the trainer loops against the reference habits; optionally write the README table."""
    from otsr import bench

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quality:
        from otsr.bench.quality import QualityOptions, markdown, run_quality, sweep_markdown, write_quality_readme

        opts = QualityOptions(dims=tuple(args.dims), budget=args.budget, device=args.device or "auto",
                              methods=tuple(args.methods))
        results = run_quality(opts, Path(args.out or "bench_quality.json"))
        print(markdown(results) + "\n\n" + sweep_markdown(results))
        if args.readme:
            write_quality_readme(Path(args.readme), results)
        return 0
    if args.sr:
        from otsr.bench.sr_check import run_sr_check, summary_lines, write_json

        args.dim = None
        pair_params = {"root": args.sr, **_pair_params("sr-folders", args)}
        extra = {"width": args.sr_width, "depth": args.sr_depth} if args.sr_width else {}
        results = run_sr_check(pair_params, args.steps, args.device or "auto", out_dir=Path(args.out + ".runs")
                               if args.out else None, **extra)
        print("\n".join(summary_lines(results)))
        if args.out:
            write_json(results, Path(args.out))
        ok = all(results[m].get("psnr_ok") and results[m].get("bias_ok", True) for m in ("ots", "gan"))
        return 0 if ok else 1
    if args.loader:
        for w in args.loader_workers:
            r = bench.loader_throughput(args.loader, args.crop, w, args.crops_per_image)
            print(f"loader {args.loader}: {w} worker(s), crop {args.crop}: {r['crops_per_s']:.0f} crops/s, "
                  f"{r['images_per_s']:.1f} decoded images/s")
        return 0
    all_cfgs = bench.configs()
    names = args.config or [n for n, c in all_cfgs.items()
                            if args.suite == "all" or (c.device == "cuda") == (args.suite == "gpu")]
    unknown = sorted(set(names) - set(all_cfgs))
    if unknown:
        raise ValueError(f"unknown bench config(s) {unknown}; valid: {', '.join(all_cfgs)}")
    if any(all_cfgs[n].device == "cuda" for n in names) and not torch.cuda.is_available() and not args.device:
        raise ValueError("the gpu configurations need CUDA; run them on a GPU machine or pass --device cpu")
    if args.pack:
        rows = [bench.pack(names[0], k, t, args.steps, args.warmup, args.device)
                for k in args.pack for t in (args.pack_threads or [1])]
        for r in rows:
            print(f"{names[0]}: {r['trials']} trial(s) x {r['threads']} thread(s): "
                  f"{r['total_steps_per_s']:.2f} steps/s in total, {r['per_trial_steps_per_s']:.2f} per trial")
        print(json.dumps(rows))
        return 0
    report = bench.run_suite(names, steps=args.steps, warmup=args.warmup, compile=args.compile, device=args.device,
                             reference=not args.no_reference, quiet=args.json, measure_peak=not args.no_peak)
    if args.json:
        print(json.dumps(report))
    else:
        print(bench.markdown(report))
    if args.readme:
        bench.write_readme(Path(args.readme), args.suite if not args.config else "custom", bench.markdown(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


def cmd_upscale(args: argparse.Namespace) -> int:
    """Super-resolve whole images with a trained SR checkpoint."""
    from otsr.sr.upscale import upscale_files

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    for path in upscale_files(args.checkpoint, args.images, args.out, device=device, tile=args.tile,
                              overlap=args.overlap):
        print(path)
    return 0


def cmd_sr_demo(args: argparse.Namespace) -> int:
    """Build the offline SR demo dataset."""
    from otsr.sr.demo import build_demo, default_demo_root

    root = build_demo(Path(args.out) if args.out else default_demo_root())
    print(root)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every TrainConfig field is a --flag of its default's type."""
    p = argparse.ArgumentParser(prog="otsr", description=__doc__)
    p.add_argument("--version", action="version", version=f"otsr {otsr.__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train one map on one pair")
    t.add_argument("--pair", help=f"one of: {', '.join(pair_names())}; or a user pair as module:Class "
                                  f"(default gaussian-shift)")
    t.add_argument("--dim", type=int, help="the pair's dimension (dim, or crop size for image pairs)")
    t.add_argument("--pair-param", action="append", metavar="KEY=VALUE", help="any other pair parameter")
    t.add_argument("--out", help="output folder (config, checkpoint, metrics.json, map.png)")
    t.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its checkpoint")
    t.add_argument("--overwrite", action="store_true", help="reuse an --out folder holding a finished run")
    helps = TrainConfig.field_help()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        text = f"{helps.get(f.name, '')} (default {f.default!r}; vector and SR pairs: see otsr.recipes)"
        text = text.replace("%", "%%")
        if isinstance(f.default, bool):  # --compile / --no-compile: never a truthy "False" string
            t.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            t.add_argument(flag, dest=f.name, type=type(f.default), default=None, choices=CHOICES.get(f.name),
                           help=text)
    t.set_defaults(fn=cmd_train)
    sub.add_parser("pairs", help="list the pairs and their parameters").set_defaults(fn=cmd_pairs)
    u = sub.add_parser("upscale", help="super-resolve images with a trained SR checkpoint (tiled)")
    u.add_argument("images", nargs="+")
    u.add_argument("--checkpoint", required=True, help="a run folder or checkpoint.pt")
    u.add_argument("--out", required=True, help="output folder for the PNGs")
    u.add_argument("--tile", type=int, default=64, help="LR tile side")
    u.add_argument("--overlap", type=int, default=16, help="LR context pixels around each tile")
    u.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    u.set_defaults(fn=cmd_upscale)
    d = sub.add_parser("sr-demo", help="build the offline SR demo dataset")
    d.add_argument("--out", help="folder (default: $OTSR_DATA or ~/.cache/otsr, /sr_demo)")
    d.set_defaults(fn=cmd_sr_demo)
    b = sub.add_parser("bench", help="time the trainer loops against the reference habits")
    b.add_argument("--suite", choices=["cpu", "gpu", "all"], default="cpu")
    b.add_argument("--quality", action="store_true", help="train OTS and the lambda-GAN on convex-mixture at --dims "
                   "with the default recipe; print L2-UVP, bias, OT-consistency, steps and wall time next to the "
                   "best affine map and published figures (continues the JSON given by --out)")
    b.add_argument("--dims", type=lambda s: [int(v) for v in s.split(",")], default=[2, 8, 16, 64, 128],
                   help="quality: dimensions")
    b.add_argument("--budget", type=float, default=1.0, help="quality: multiplies the recipe's steps")
    b.add_argument("--methods", type=lambda s: s.split(","), default=["ots", "gan"], help="quality: ots,gan")
    b.add_argument("--config", action="append", help="one configuration (repeatable) instead of a suite")
    b.add_argument("--steps", type=int, default=20, help="timed outer steps per loop")
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--compile", action="store_true", help="torch.compile the lean loop's map (and potential)")
    b.add_argument("--device", help="override each configuration's device (e.g. cpu for a dry run)")
    b.add_argument("--threads", type=int, help="torch threads")
    b.add_argument("--no-reference", action="store_true", help="skip the reference-habits timing")
    b.add_argument("--no-peak", action="store_true", help="skip the matmul peak measurement")
    b.add_argument("--pack", type=lambda s: [int(v) for v in s.split(",")],
                   help="e.g. 1,2,4: that many processes of the first config at once; prints aggregate steps/s")
    b.add_argument("--pack-threads", type=lambda s: [int(v) for v in s.split(",")], help="threads per process")
    b.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    b.add_argument("--sr", metavar="ROOT", help="train OTS and the GAN on sr-folders at ROOT ('demo' for the demo "
                   "set) for --steps with the reference recipe and check PSNR and bias against bicubic")
    b.add_argument("--pair-param", action="append", metavar="KEY=VALUE", help="--sr: a pair parameter (hr_crop=64)")
    b.add_argument("--sr-width", type=int, help="--sr: EDSR width (default: the recipe's 128)")
    b.add_argument("--sr-depth", type=int, default=16, help="--sr with --sr-width: EDSR blocks")
    b.add_argument("--loader", help="time the SR crop loader on this dataset folder ('demo' for the demo set)")
    b.add_argument("--loader-workers", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
    b.add_argument("--crop", type=int, default=128, help="loader benchmark: HR crop side")
    b.add_argument("--crops-per-image", type=int, default=8, help="loader benchmark: crops per decoded image")
    b.add_argument("--readme", help="write the table into this README between the suite's markers")
    b.add_argument("--out", help="also save the raw figures as JSON here (quality: the results file to continue; "
                                 "default bench_quality.json)")
    b.set_defaults(fn=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``otsr`` console script."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse already printed the usage and the error (or --help / --version)
        return int(e.code or 0)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError, ImportError) as e:  # DataError, CheckpointError are ValueErrors
        print(f"otsr: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
