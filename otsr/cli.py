"""otsr: train one map (or a bundle of them) on one pair, list pairs, benchmark, upscale images, build the demo set.

Commands:
  otsr train      train OTS or the lambda-GAN on a pair; comma lists (--lam 0.1,1,10) train a bundle
  otsr pairs      list the pairs and their parameters
  otsr bench      speed, bundle, quality and super-resolution benchmarks
  otsr upscale    super-resolve images with a trained SR checkpoint
  otsr sr-demo    build the offline super-resolution demo set
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT, EXIT_DIVERGED = 2, 3
# A resumed run keeps what defines it: changing one of these is an error naming both values.
RESUME_FIXED = ("method", "cost", "lam", "gp", "map_model", "critic_model", "width", "depth", "warm_start", "seed",
                "batch_size")
BUNDLE_FILE = "bundle.json"


def _version() -> str:
    from otsr import __version__

    return f"otsr {__version__}"


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
    from otsr.pairs import pair_parameters

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


def _bundle_fields() -> set[str]:
    from otsr.methods import METHODS

    return set().union(*(m.bundle_fields for m in METHODS.values()))


def _config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig flags given on the command line; 'a,b,c' for a bundle field is a list (one per member)."""
    from otsr.config import TrainConfig

    out = {}
    for f in dataclasses.fields(TrainConfig):
        text = getattr(args, f.name, None)
        if text is None:
            continue
        if isinstance(text, bool):
            out[f.name] = text
            continue
        flag = "--" + f.name.replace("_", "-")
        parts = text.split(",") if f.name in _bundle_fields() else [text]
        values = [_parse_value(p.strip(), f.default, flag) for p in parts]
        out[f.name] = values if len(values) > 1 else values[0]
    return out


def _member_name(cfg, varying: list[str]) -> str:
    return ",".join(f"{k}={getattr(cfg, k):g}" if isinstance(getattr(cfg, k), float) else f"{k}={getattr(cfg, k)}"
                    for k in varying)


def _varying(members) -> list[str]:
    return [k for k in sorted(_bundle_fields()) if len({getattr(m, k) for m in members}) > 1]


class _Progress:
    """A progress bar on stderr (tqdm when installed) with the rate, the ETA and the latest evaluation's headline
    metrics; in a bundle, one line per member at each evaluation.

    The bar is drawn at the first step (every check has passed by then) and moves at every step, so the rate and
    the ETA come from the first measured steps, not from the first loss readout.
    """

    def __init__(self, total: int, start: int, names: list[str], headline: tuple[str, ...] = ()):
        self.names, self.total, self.last, self.headline = names, total, start, headline
        self.evals: dict[str, str] = {}
        self.bar = None
        self._t0: float | None = None  # without tqdm: when the first step ended
        self._shown = 0.0

    def _open(self, step: int) -> None:
        import time

        try:
            from tqdm import tqdm
        except ImportError:
            self._t0, self._start = time.perf_counter(), step
            return
        self.bar = tqdm(total=self.total, initial=step, unit="step", file=sys.stderr, dynamic_ncols=True)

    def step(self, step: int) -> None:
        """A step ended: move the bar (the first step opens it; the rate counts from there)."""
        if self.bar is None and self._t0 is None:
            self._open(step)
        elif self.bar is not None:
            self.bar.update(step - self.last)
        else:
            self._print(step)
        self.last = step

    def _print(self, step: int) -> None:
        import time

        now = time.perf_counter()
        if now - self._shown < 0.5 and step < self.total:
            return
        self._shown = now
        rate = (step - self._start) / max(now - self._t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else math.inf
        tail = f" | {next(iter(self.evals.values()))}" if len(self.names) == 1 and self.evals else ""
        print(f"\rstep {step}/{self.total} {rate:.1f} step/s, ETA {eta:.0f}s{tail}", end="", file=sys.stderr,
              flush=True)

    def log(self, step: int, rows) -> None:
        """A loss readout: show the latest evaluation's headline metrics next to the bar."""
        if self.bar is not None and len(self.names) == 1 and self.evals:
            self.bar.set_postfix_str(next(iter(self.evals.values())))

    def report(self, progress) -> None:
        """An evaluation: remember its headline metrics; bundles print one line per member."""
        for p in progress:
            if p.final:  # the final evaluation is in the summary printed at the end
                continue
            text = _headline(p.metrics, self.headline)
            self.evals[self.names[p.member]] = text
            if len(self.names) > 1:
                self.write(f"step {p.step:>6}  {self.names[p.member]:<24} {text}")

    def write(self, line: str) -> None:
        """A line above the bar."""
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(f"\r{line}", file=sys.stderr, flush=True)

    def close(self, clear: bool = False) -> None:
        """End the bar (``clear``: erase it, for an error message that follows)."""
        if self.bar is not None:
            if clear:
                self.bar.leave = False
            self.bar.close()
        elif self._t0 is not None:
            print(file=sys.stderr)


def _headline(metrics: dict[str, float], names: tuple[str, ...]) -> str:
    """The pair's headline metrics (``Pair.headline``), shown on the progress bar and in the summary."""
    return "  ".join(f"{k} {metrics[k]:.4g}" for k in names if k in metrics and math.isfinite(metrics[k]))


def _load_resume(args: argparse.Namespace):
    """Checkpoints, configs, pair and folders of ``--resume DIR`` (a run folder or a bundle folder); flags that
    would change the run's identity are refused."""
    from otsr.checkpoint import CheckpointError, load_checkpoint
    from otsr.config import TrainConfig
    from otsr.pairs import PairSpec

    root = Path(args.resume)
    if (root / BUNDLE_FILE).is_file():
        try:
            names = json.loads((root / BUNDLE_FILE).read_text())["members"]
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{root / BUNDLE_FILE}: damaged bundle file ({e})") from None
        folders = [root / n for n in names]
    else:
        folders = [root]
    ckpts = [load_checkpoint(f) for f in folders]
    overrides = _config_overrides(args)
    for key, value in overrides.items():
        if isinstance(value, list):
            raise ValueError(f"--resume {root}: --{key.replace('_', '-')} takes one value when resuming")
    for key in RESUME_FIXED:
        if key in overrides and overrides[key] != ckpts[0]["config"].get(key):
            raise ValueError(f"--resume {root}: the run has {key}={ckpts[0]['config'].get(key)!r}; "
                             f"--{key.replace('_', '-')} {overrides[key]!r} would change it (start a new --out)")
    spec = PairSpec.from_dict(ckpts[0]["pair"], f"checkpoint {root}: pair")
    if args.pair is not None and args.pair != spec.name:
        raise ValueError(f"--resume {root}: the run is on pair {spec.name!r}; --pair {args.pair!r} would "
                         f"change it (start a new --out)")
    if args.dim is not None or args.pair_param:
        raise ValueError(f"--resume {root}: pair parameters come from the checkpoint "
                         f"({spec.describe()}); --dim/--pair-param cannot change them")
    cfgs = [TrainConfig.from_dict({**c["config"], **overrides}) for c in ckpts]
    _say_resume(ckpts[0], cfgs[0])
    return ckpts, cfgs, spec.build(), folders


def _say_resume(ckpt: dict, cfg) -> None:
    step, old = int(ckpt["step"]), ckpt["config"]
    if step > cfg.steps:
        raise ValueError(f"the checkpoint is at step {step}, beyond --steps {cfg.steps}; a run cannot be shortened")
    print(f"otsr: resuming from step {step} of {cfg.steps}", file=sys.stderr)
    if ckpt.get("status") == "completed" and step == cfg.steps:
        print("otsr: the run is complete at this length; nothing to train (pass a larger --steps to continue)",
              file=sys.stderr)
    if old.get("lr_schedule") == "cosine" and old.get("steps") != cfg.steps:
        before = 0.5 * (1 + math.cos(math.pi * min(step, old["steps"]) / old["steps"]))
        after = cfg.lr_factor(step)
        print(f"otsr: warning: the cosine schedule now spans {cfg.steps} steps instead of {old['steps']}: the "
              f"learning-rate factor at step {step} goes from {before:.3g} to {after:.3g}", file=sys.stderr)


def _check_device(members) -> None:
    """The members' device exists here; the error names --device."""
    import torch

    from otsr.runtime import resolve_device

    for dev in dict.fromkeys(m.device for m in members):
        if dev.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {dev}: CUDA is not available on this machine (use --device cpu or auto)")
        resolve_device(dev)


def _make_folder(path: Path, flag: str) -> bool:
    """Create ``path`` (and its parents) or fail naming the flag; True when it did not exist before."""
    import os

    existed = path.is_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot create the folder ({e.strerror or e})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: the folder is not writable")
    return not existed


def _prepare_out(out: Path, members, overwrite: bool) -> list[Path]:
    """Check and create --out (a bundle: its bundle file too); returns the members' run folders."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if ((out / "metrics.json").exists() or (out / BUNDLE_FILE).exists()) and not overwrite:
        raise ValueError(f"{out} already holds a run; pass --overwrite, another --out, or --resume {out}")
    names = [_member_name(m, _varying(members)) for m in members] if len(members) > 1 else []
    if len(set(names)) != len(names):
        raise ValueError(f"bundle members are not distinct: {names}")
    _make_folder(out, "--out")
    if not names:
        return [out]
    (out / BUNDLE_FILE).write_text(json.dumps({"members": names}, indent=2))
    return [out / n for n in names]


def _remove_if_unused(out: Path) -> None:
    """Remove an --out folder this command created when a failure left nothing in it but the bundle file."""
    files = [f for f in out.rglob("*") if not f.is_dir()]
    if files and files != [out / BUNDLE_FILE]:
        return
    for f in files:
        f.unlink()
    for d in sorted((d for d in out.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True):
        d.rmdir()
    out.rmdir()


def cmd_train(args: argparse.Namespace) -> int:
    """Build and check everything (device, pair, output folder, resume) before any progress output, train, print
    a short summary (the JSON is in the folder)."""
    from otsr.evaluation import check_pair
    from otsr.pairs import make_pair
    from otsr.recipes import resolve_members
    from otsr.rundir import run_config
    from otsr.runtime import resolve_device, set_threads
    from otsr.trainers import train_bundle

    set_threads(args.threads)  # before the pair is built: some pairs fit a network on construction
    resume = None
    if args.resume:
        resume, members, pair, folders = _load_resume(args)
        out = Path(args.resume)
    else:
        if not args.out and not args.print_config:
            raise ValueError("--out DIR is required (or --resume DIR)")
        name = args.pair or "gaussian-shift"
        pair = make_pair(name, **_pair_params(name, args))
        members = resolve_members(pair, {"method": "ots", **_config_overrides(args)})
        out = Path(args.out) if args.out else None
        folders = None
    if args.print_config:
        configs = [run_config(m, pair) for m in members]
        print(json.dumps(configs[0] if len(configs) == 1 else configs, indent=2))
        return 0
    _check_device(members)
    check_pair(pair, resolve_device(members[0].device), members[0].cost)  # a broken pair writes nothing
    created = False
    if folders is None:
        created = not out.is_dir()
        folders = _prepare_out(out, members, args.overwrite)
    else:
        _make_folder(out, "--resume")
    names = [f.name if len(folders) > 1 else "" for f in folders]
    start = int(resume[0]["step"]) if resume else 0
    headline = pair.headline().names()
    bar = _Progress(members[0].steps, start, names, headline)
    try:
        results = train_bundle(members, pair, resume=resume, out_dirs=folders, on_log=bar.log, on_step=bar.step,
                               report=lambda ps: bar.report(ps))
    except BaseException:
        bar.close(clear=True)  # the error prints on a clean line, and no bar frame follows it
        if created:
            _remove_if_unused(out)
        raise
    bar.close()
    if len(results) == 1:
        res = results[0]
        print(f"{_status(res, start)}  {_headline(res.metrics, headline) or ''}".rstrip())
        print(f"  {folders[0]}/  (metrics.json, result.json, curves.png, map.png)")
    else:
        print(_bundle_table(results, names, start, headline))
        print(f"  {out}/<member>/  (metrics.json, result.json, curves.png, map.png)")
    return EXIT_DIVERGED if all(r.diverged for r in results) else 0


def _status(res, start: int) -> str:
    """'completed at step N (T s)'; a run resumed at its own end trained nothing, so it shows no time."""
    if res.status != "completed":
        return res.message or f"{res.status} at step {res.step}"
    took = f"{res.seconds:.0f} s" if res.step > start else "already complete"
    return f"{res.status} at step {res.step} ({took})"


def _bundle_table(results, names: list[str], start: int, headline: tuple[str, ...]) -> str:
    """One row per member: its name, the swept knob (methods that have one, e.g. λ), the pair's headline metrics,
    its status; '*' marks the best member by the first headline metric that any member reached."""
    from otsr.methods import get_method
    from otsr.metric_registry import metric_direction

    shown = [k for k in headline if any(math.isfinite(r.metrics.get(k, math.nan)) for r in results)]
    method = get_method(results[0].config.method)
    knob = method.swept
    best = None
    if shown:
        key, sign = shown[0], (1 if metric_direction(shown[0]) == "min" else -1)
        scored = [(sign * r.metrics[key], i) for i, r in enumerate(results)
                  if math.isfinite(r.metrics.get(key, math.nan))]
        best = min(scored)[1] if scored else None
    header = ["", "member", *([method.symbol] if knob else []), *shown, "status"]
    rows = [header]
    for i, (r, name) in enumerate(zip(results, names)):
        metrics = [f"{r.metrics[k]:.4g}" if math.isfinite(r.metrics.get(k, math.nan)) else "–" for k in shown]
        rows.append(["*" if i == best else "", name, *([f"{getattr(r.config, knob):g}"] if knob else []), *metrics,
                     _status(r, start)])
    widths = [max(len(row[c]) for row in rows) for c in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if best is not None:
        lines.append(f"* best: {'lowest' if metric_direction(shown[0]) == 'min' else 'highest'} {shown[0]}")
    return "\n".join(lines)


def cmd_pairs(args: argparse.Namespace) -> int:
    """Print each registered pair with its parameters and defaults."""
    from otsr.pairs import pair_class, pair_names, pair_parameters

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
    """Benchmarks: loop speed against the reference habits, bundles, quality, SR, the potential check, the loader."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.settings and not args.potential_check:
        raise ValueError(f"KEY=VALUE settings {args.settings} go with --potential-check only")
    for flag, run in (("potential_check", _bench_potential_check), ("quality", _bench_quality),
                      ("bundle", _bench_bundle), ("sr", _bench_sr), ("loader", _bench_loader), ("pack", _bench_pack)):
        if getattr(args, flag):
            return run(args)
    return _bench_speed(args)


def split_settings(pair_name: str, items: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """KEY=VALUE items -> (pair parameters, TrainConfig settings); a key that is neither is an error naming it."""
    from otsr.config import TrainConfig
    from otsr.pairs import pair_parameters

    pair_keys = pair_parameters(pair_name)
    fields = {f: getattr(TrainConfig, f) for f in TrainConfig.__dataclass_fields__}
    params: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"setting {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        if k in pair_keys:
            params[k] = _parse_value(v, pair_keys[k], f"pair parameter {k!r}")
        elif k in fields and k != "method":
            settings[k] = _parse_value(v, fields[k], f"config key {k!r}")
        else:
            raise ValueError(f"{k!r} is neither a parameter of pair {pair_name!r} ({', '.join(sorted(pair_keys))}) "
                             f"nor a training setting")
    return params, settings


def _bench_potential_check(args: argparse.Namespace) -> int:
    from otsr.bench.potential_check import AUC_TARGET, run_potential_check, summary_lines, write_json
    from otsr.pairs import make_pair

    name = args.potential_check
    params, settings = split_settings(name, args.settings)
    pair = make_pair(name, **params)
    if args.device:
        settings["device"] = args.device
    results = run_potential_check(pair, settings, methods=tuple(args.methods), n_eval=args.eval_samples or 512)
    print("\n".join(summary_lines(results)))
    if args.out:
        write_json(results, Path(args.out))
    return 0 if all(results[m]["auc"] >= AUC_TARGET for m in args.methods) or args.report_only else 1


def _bench_quality(args: argparse.Namespace) -> int:
    from otsr.bench.quality import (
        QualityOptions,
        markdown,
        parse_pairs,
        run_quality,
        sweep_markdown,
        write_quality_readme,
    )

    opts = QualityOptions(dims=tuple(args.dims), budget=args.budget, device=args.device or "auto",
                          methods=tuple(args.methods), redo=args.redo)
    if args.quality_pairs:
        opts.pairs = parse_pairs(args.quality_pairs)
    if args.gan_pairs:
        opts.gan_pairs = parse_pairs(args.gan_pairs)
    results = run_quality(opts, Path(args.out or "bench_quality.json"))
    print(markdown(results) + "\n\n" + sweep_markdown(results))
    if args.readme:
        write_quality_readme(Path(args.readme), results)
    return 0


def _bench_bundle(args: argparse.Namespace) -> int:
    from otsr import bench
    from otsr.bench.bundles import markdown as bundle_markdown
    from otsr.bench.bundles import run_bundle_bench

    report = run_bundle_bench(args.bundle_config or None, sizes=args.bundle, steps=args.steps,
                              warmup=args.warmup, device=args.device, pack=not args.no_pack,
                              limit_seconds=0 if args.no_peak else 1.0, threads=args.threads)
    print(bundle_markdown(report))
    if args.readme:
        bench.write_readme(Path(args.readme), "bundle", bundle_markdown(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


def _bench_sr(args: argparse.Namespace) -> int:
    from otsr.bench.sr_check import run_sr_check, summary_lines, write_json

    args.dim = None
    pair_params = {"root": args.sr, **_pair_params("sr-folders", args)}
    extra = {"width": args.sr_width, "depth": args.sr_depth} if args.sr_width else {}
    if args.eval_samples:  # toy runs (the GPU check's dry mode): evaluation, not training, dominates them
        extra |= {"eval_samples": args.eval_samples, "final_eval_samples": args.eval_samples}
    results = run_sr_check(pair_params, args.steps, args.device or "auto", out_dir=Path(args.out + ".runs")
                           if args.out else None, **extra)
    print("\n".join(summary_lines(results)))
    if args.out:
        write_json(results, Path(args.out))
    from otsr.methods import comparison_methods

    ok = all(results[m.name].get("psnr_ok") and results[m.name].get("bias_ok", True) for m in comparison_methods())
    return 0 if ok or args.report_only else 1


def _bench_loader(args: argparse.Namespace) -> int:
    from otsr import bench

    for w in args.loader_workers:
        r = bench.loader_throughput(args.loader, args.crop, w, args.crops_per_image)
        print(f"loader {args.loader}: {w} worker(s), crop {args.crop}: {r['crops_per_s']:.0f} crops/s, "
              f"{r['images_per_s']:.1f} decoded images/s")
    return 0


def _speed_configs(args: argparse.Namespace) -> list[str]:
    """The speed configurations to run: --config names, or the --suite's."""
    import torch

    from otsr import bench

    all_cfgs = bench.configs()
    names = args.config or [n for n, c in all_cfgs.items()
                            if args.suite == "all" or (c.device == "cuda") == (args.suite == "gpu")]
    unknown = sorted(set(names) - set(all_cfgs))
    if unknown:
        raise ValueError(f"unknown bench config(s) {unknown}; valid: {', '.join(all_cfgs)}")
    if any(all_cfgs[n].device == "cuda" for n in names) and not torch.cuda.is_available() and not args.device:
        raise ValueError("the gpu configurations need CUDA; run them on a GPU machine or pass --device cpu")
    return names


def _bench_pack(args: argparse.Namespace) -> int:
    from otsr import bench

    names = _speed_configs(args)
    rows = [bench.pack(names[0], k, t, args.steps, args.warmup, args.device)
            for k in args.pack for t in (args.pack_threads or [1])]
    for r in rows:
        print(f"{names[0]}: {r['trials']} trial(s) x {r['threads']} thread(s): "
              f"{r['total_steps_per_s']:.2f} steps/s in total, {r['per_trial_steps_per_s']:.2f} per trial")
    print(json.dumps(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


def _bench_speed(args: argparse.Namespace) -> int:
    from otsr import bench

    names = _speed_configs(args)
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
    import torch

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


def _train_help(name: str, default: Any, helps: dict[str, str], table: dict[str, dict[str, str]]) -> str:
    text = helps.get(name, "")
    kinds = table.get(name)
    resolved = "; ".join(f"{kind}: {v}" for kind, v in kinds.items()) if kinds else ""
    text += f" (default {default!r}" + (f"; {resolved})" if resolved else ")")
    if name in _bundle_fields():
        text += "; a comma list trains a bundle"
    return text.replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every TrainConfig field is a --flag (help: its meaning and what each pair kind gets)."""
    from otsr.config import CHOICES, TrainConfig
    from otsr.pairs import pair_names
    from otsr.recipes import recipe_table

    p = argparse.ArgumentParser(prog="otsr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{train,pairs,bench,upscale,sr-demo}")
    t = sub.add_parser("train", help="train one map, or a bundle (comma lists), on one pair",
                       description="Train OTS or the lambda-GAN on one pair. Settings not given come from the pair "
                                   "kind's recipe (shown per option); a comma list such as --lam 0.1,1,10 trains a "
                                   "bundle, one run folder per member under --out.")
    t.add_argument("--pair", help=f"one of: {', '.join(pair_names())}; or a user pair as module:Class "
                                  f"(default gaussian-shift)")
    t.add_argument("--dim", type=int, help="the pair's dimension (dim, or crop size for image pairs)")
    t.add_argument("--pair-param", action="append", metavar="KEY=VALUE", help="any other pair parameter")
    t.add_argument("--out", help="output folder (config, checkpoint, metrics, figures; a bundle: one folder per "
                                 "member)")
    t.add_argument("--resume", metavar="DIR", help="continue the run (or bundle) in DIR from its checkpoint")
    t.add_argument("--overwrite", action="store_true", help="reuse an --out folder holding a finished run")
    t.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: $OMP_NUM_THREADS, else 1: "
                   "more threads than free cores stall a run, and the small MLPs gain little from a second thread)")
    t.add_argument("--print-config", action="store_true", help="print the resolved config (recipe applied, width "
                                                               "and device resolved) and exit")
    helps, table = TrainConfig.field_help(), recipe_table()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        text = _train_help(f.name, f.default, helps, table)
        if isinstance(f.default, bool):  # --compile / --no-compile: never a truthy "False" string
            t.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            t.add_argument(flag, dest=f.name, default=None, choices=CHOICES.get(f.name), help=text,
                           metavar=None if f.name in CHOICES else type(f.default).__name__.upper())
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
    _bench_parser(sub)
    return p


def _bench_parser(sub) -> None:
    b = sub.add_parser("bench", help="speed, bundle, quality, SR and loader benchmarks")
    b.add_argument("--suite", choices=["cpu", "gpu", "all"], default="cpu")
    b.add_argument("--quality", action="store_true", help="train OTS and the lambda-GAN on the quality pairs at "
                   "--dims with the default recipe; print L2-UVP, bias, OT-consistency, steps and wall time next to "
                   "the best affine map, the identity and published figures (continues the JSON given by --out)")
    b.add_argument("--quality-pairs", help="quality: family:seed list (default convex-mixture:0,icnn-mixture:1,"
                   "icnn-mixture:2,icnn-mixture:3: seeds 1-3 were not looked at while tuning the recipe)")
    b.add_argument("--gan-pairs", help="quality: where the GAN's lambda sweep runs too (default convex-mixture:0,"
                   "icnn-mixture:1)")
    b.add_argument("--dims", type=lambda s: [int(v) for v in s.split(",")], default=[16, 64],
                   help="quality: dimensions")
    b.add_argument("--budget", type=float, default=1.0, help="quality: multiplies the recipe's steps")
    b.add_argument("--redo", action="store_true", help="quality: measure the chosen pairs, dimensions and methods "
                   "again (without it, stored rows are kept and a run stopped midway continues from its checkpoint "
                   "in the folder NAME.runs/ beside --out; so drop --redo to continue a stopped bench)")
    b.add_argument("--methods", type=lambda s: s.split(","), default=["ots", "gan"], help="quality: ots,gan")
    b.add_argument("--bundle", type=lambda s: [int(v) for v in s.split(",")],
                   help="bundle sizes, e.g. 1,4,16,64: summed member steps/s, GFLOP/s (share of the matmul peak and "
                        "of baddbmm on the bundle's own layer shapes) and peak memory next to the best packing of solo "
                        "trials, measured in the same run")
    b.add_argument("--bundle-config", action="append", help="bundle: configuration (repeatable; default: the quick "
                   "sweep's GAN and the D=64 GAN)")
    b.add_argument("--no-pack", action="store_true", help="bundle: skip the solo-packing comparison")
    b.add_argument("--config", action="append", help="one configuration (repeatable) instead of a suite")
    b.add_argument("--steps", type=int, default=20, help="timed outer steps per loop")
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--compile", action="store_true", help="torch.compile the lean loop's map (and potential)")
    b.add_argument("--device", help="override each configuration's device (e.g. cpu for a dry run)")
    b.add_argument("--threads", type=int, help="torch threads")
    b.add_argument("--no-reference", action="store_true", help="skip the reference-habits timing")
    b.add_argument("--no-peak", action="store_true",
                   help="skip the matmul peak measurement (bundle: and the batched-matmul limit)")
    b.add_argument("--pack", type=lambda s: [int(v) for v in s.split(",")],
                   help="e.g. 1,2,4: that many processes of the first config at once; prints aggregate steps/s")
    b.add_argument("--pack-threads", type=lambda s: [int(v) for v in s.split(",")], help="threads per process")
    b.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    b.add_argument("--sr", metavar="ROOT", help="train OTS and the GAN on sr-folders at ROOT ('demo' for the demo "
                   "set) for --steps with the reference recipe and check PSNR and bias against bicubic")
    b.add_argument("--pair-param", action="append", metavar="KEY=VALUE", help="--sr: a pair parameter (hr_crop=64)")
    b.add_argument("--sr-width", type=int, help="--sr: EDSR width (default: the recipe's 128)")
    b.add_argument("--sr-depth", type=int, default=16, help="--sr with --sr-width: EDSR blocks")
    b.add_argument("--report-only", action="store_true", help="--sr, --potential-check: exit 0 when the runs "
                   "complete, whatever the "
                   "verdicts (they are in the JSON; bench/gpu_check.sh judges them)")
    b.add_argument("--potential-check", metavar="PAIR", help="freeze the map at its start (bicubic for SR, the "
                   "identity for images) and train only the OTS potential and the GAN critic against Q with the "
                   "recipe; prints the held-out gap and separation AUC (KEY=VALUE: pair parameters or settings)")
    b.add_argument("--eval-samples", type=int, help="--potential-check: held-out samples of each side (512); --sr: "
                   "the evaluations' samples (default: the recipe's)")
    b.add_argument("settings", nargs="*", metavar="KEY=VALUE", help="--potential-check: pair parameters "
                   "(hr_crop=32) and training settings (steps=300, lr_critic=1e-3)")
    b.add_argument("--loader", help="time the SR crop loader on this dataset folder ('demo' for the demo set)")
    b.add_argument("--loader-workers", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
    b.add_argument("--crop", type=int, default=128, help="loader benchmark: HR crop side")
    b.add_argument("--crops-per-image", type=int, default=8, help="loader benchmark: crops per decoded image")
    b.add_argument("--readme", help="write the table into this README between the suite's markers")
    b.add_argument("--out", help="also save the raw figures as JSON here (quality: the results file to continue; "
                                 "default bench_quality.json)")
    b.set_defaults(fn=cmd_bench)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``otsr`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--version"]:  # answered without importing torch
        print(_version())
        return 0
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse already printed the usage and the error (or --help)
        return int(e.code or 0)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError, ImportError, OSError) as e:  # DataError, CheckpointError: ValueErrors
        print(f"otsr: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno == 28:
        return f"no space left on the device ({e.filename or 'output folder'}); free space and --resume"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
