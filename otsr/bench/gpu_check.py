"""The verdicts of ``bench/gpu_check.sh``: read the files its steps wrote and judge them.

On a GPU the real criteria apply (bf16 within 1.5x of fp32, OTS well past the best affine map, SR within 1 dB of
bicubic, bundle throughput). A dry run (CPU, toy sizes) can only show that every command ran and wrote complete,
well-formed, finite results and that the judging runs; it says which criteria it did not judge, and passes on what
it can judge. Needs only torch's standard library companions (json): runs on the lent machine as is.

    python -m otsr.bench.gpu_check OUTDIR [--dry]
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

BUNDLE_TARGET = 1000.0  # summed member steps/s of the MLP GAN at D = 16 on one H100/H200 (8 processes: 153)
PRECISION_SLACK = 1.5  # bf16 L2-UVP at most this times fp32's
IMAGE_TARGET = 5.0  # OTS L2-UVP (%) on convex-images with the default recipe
AFFINE_FACTOR = 4.0  # at a quarter of the recipe, OTS at least this much better than the best affine map


def _load(path: Path) -> Any:
    return json.loads(path.read_text())


def _finite(values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def check_precision(out: Path, dry: bool) -> tuple[bool | None, str]:
    """bf16 autocast gives the fp32 answer (OTS on convex-mixture D = 8)."""
    m = {p: _load(out / f"precision-{p}" / "result.json") for p in ("fp32", "bf16")}
    uvp = {p: r["metrics"].get("l2_uvp") for p, r in m.items()}
    if any(r["status"] != "completed" for r in m.values()) or not _finite(uvp.values()):
        return False, f"runs did not complete with finite L2-UVP: {uvp}"
    if dry:
        return None, f"L2-UVP fp32 {uvp['fp32']:.2f}% bf16 {uvp['bf16']:.2f}% (1.5x criterion not judged: toy run)"
    ok = uvp["bf16"] <= PRECISION_SLACK * uvp["fp32"]
    return ok, f"L2-UVP fp32 {uvp['fp32']:.2f}% bf16 {uvp['bf16']:.2f}% (bf16 <= {PRECISION_SLACK}x fp32)"


def check_quality(out: Path, dry: bool) -> tuple[bool | None, str]:
    """OTS far past the best affine map on both pair families."""
    res = _load(out / "quality.json")
    lines, ok = [], True
    for name, dims in res["pairs"].items():
        for d, row in dims.items():
            ots = row.get("ots") or {}
            if ots.get("status") != "completed" or not _finite([ots.get("l2_uvp"), row.get("affine_l2_uvp")]):
                return False, f"{name} D={d}: no finite OTS result"
            good = ots["l2_uvp"] * AFFINE_FACTOR <= row["affine_l2_uvp"]
            ok &= good
            lines.append(f"{name} D={d} OTS {ots['l2_uvp']:.2f}% vs affine {row['affine_l2_uvp']:.1f}%")
    if dry:
        return None, "; ".join(lines) + " (affine-factor criterion not judged: toy budget)"
    return ok, "; ".join(lines) + f" (OTS <= affine / {AFFINE_FACTOR:g})"


def check_bundles(out: Path, dry: bool) -> tuple[bool | None, str]:
    """Bundles: summed member steps/s (and achieved GFLOP/s) per K, next to the best solo packing."""
    rep = _load(out / "bundles.json")
    lines = []
    for name, row in rep["rows"].items():
        rates = {b["k"]: b["steps_per_s"] for b in row["bundles"]}
        if not rates or not _finite(rates.values()):
            return False, f"{name}: no finite bundle figures"
        gflops = {b["k"]: b.get("gflops") for b in row["bundles"]}
        lines.append(f"{name}: " + ", ".join(f"K={k} {v:.0f}/s" + (f" {gflops[k]:.0f} GFLOP/s" if gflops[k] else "")
                                             for k, v in rates.items())
                     + (f" (best solo packing {row['best_packing']:.0f}/s)" if row.get("best_packing") else ""))
    gan = rep["rows"].get("mlp-gan-d16")
    if dry or gan is None:
        return None, "; ".join(lines) + f" ({BUNDLE_TARGET:g} steps/s target not judged)"
    best = max(b["steps_per_s"] for b in gan["bundles"])
    return best >= BUNDLE_TARGET, "; ".join(lines) + f" (target: >= {BUNDLE_TARGET:g} summed steps/s)"


def check_sr(out: Path, dry: bool) -> tuple[bool | None, str]:
    """The AIM19-shaped SR recipe: PSNR within 1 dB of bicubic throughout, OTS less biased than its start by more
    than 3 noise floors."""
    from otsr.methods import comparison_methods  # torch: only when judging

    res = _load(out / "sr_check.json")
    parts, ok = [], True
    for method in (m.name for m in comparison_methods()):
        r = res.get(method) or {}
        if r.get("status") != "completed" or not _finite([r.get("psnr"), r.get("psnr_bicubic")]):
            return False, f"{method}: {r.get('status')} {r.get('message', '')}"
        ok &= bool(r.get("psnr_ok")) and bool(r.get("bias_ok", True))
        parts.append(f"{method} PSNR {r['psnr']:.2f} (bicubic {r['psnr_bicubic']:.2f}), {r['steps_per_s']:.2f} "
                     f"steps/s, peak {r['peak_mem_gib']:.2f} GiB")
    if dry:
        return None, "; ".join(parts) + " (PSNR and bias criteria not judged: 3 steps of a toy EDSR)"
    return ok, "; ".join(parts)


def check_potential(out: Path, dry: bool) -> tuple[bool | None, str]:
    """The SR demo pair's OTS potential, alone against bicubic, separates HR from bicubic (held-out AUC)."""
    res = _load(out / "potential.json")
    runs = {k: v for k, v in res.items() if isinstance(v, dict) and "auc" in v}
    if not runs or not _finite(v["auc"] for v in runs.values()):
        return False, f"no finite AUC: { {k: v.get('auc') for k, v in runs.items()} }"
    text = ", ".join(f"{k} {v['role']} AUC {v['auc']:.3f}" for k, v in runs.items())
    if dry:
        return None, text + f" (AUC >= {res['target_auc']} not judged: 4 updates)"
    potentials = [v["auc"] for v in runs.values() if v["role"] == "potential"]
    return bool(potentials) and min(potentials) >= res["target_auc"], text + f" (potential >= {res['target_auc']})"


def check_images(out: Path, dry: bool) -> tuple[bool | None, str]:
    """OTS on the known-map image pair: far past the identity under the GPU path's precision."""
    r = _load(out / "convex-images" / "result.json")
    uvp = r["metrics"].get("l2_uvp")
    if r["status"] != "completed" or not _finite([uvp]):
        return False, f"run {r['status']}: L2-UVP {uvp}"
    text = f"L2-UVP {uvp:.2f}% (precision {r.get('precision')})"
    if dry:
        return None, text + " (quality not judged: 4 steps)"
    return uvp <= IMAGE_TARGET, text + f" (target <= {IMAGE_TARGET:g} %)"


def check_speed(out: Path, dry: bool) -> tuple[bool | None, str]:
    """The speed suite's figures are complete and finite (figures, not a criterion)."""
    rep = _load(out / "speed.json")
    rows = rep["rows"]
    if not rows or not _finite(r["lean"]["steps_per_s"] for r in rows):
        return False, "no finite speed rows"
    return True, ", ".join(f"{r['config']} {r['lean']['steps_per_s']:.1f} steps/s (x{r['speedup']:.1f})" for r in rows)


def check_packing(out: Path, dry: bool) -> tuple[bool | None, str]:
    """Solo-trial packing: aggregate steps/s per process count."""
    rows = _load(out / "packing.json")
    if not rows or not _finite(r["total_steps_per_s"] for r in rows):
        return False, "no finite packing rows"
    return True, ", ".join(f"{r['trials']}x{r['threads']} thr {r['total_steps_per_s']:.1f}/s" for r in rows)


CHECKS: dict[str, Callable[[Path, bool], tuple[bool | None, str]]] = {
    "precision": check_precision, "quality": check_quality, "bundles": check_bundles, "sr": check_sr,
    "potential": check_potential, "images": check_images, "speed": check_speed, "packing": check_packing}


def judge(out: Path, dry: bool, steps: dict[str, int]) -> tuple[bool, list[str]]:
    """Every check whose command ran; a failed command or an unreadable result fails its check."""
    lines, ok = [], True
    for name, check in CHECKS.items():
        if steps.get(name, 0) != 0:
            lines.append(f"[FAIL] {name}: its command failed (exit {steps.get(name)}; see log.txt)")
            ok = False
            continue
        try:
            verdict, detail = check(out, dry)
        except (OSError, ValueError, KeyError, TypeError) as e:
            verdict, detail = False, f"result unreadable: {type(e).__name__}: {e}"
        ok &= verdict is not False
        tag = {True: "PASS", False: "FAIL", None: "RAN"}[verdict]
        lines.append(f"[{tag}] {name}: {detail}")
    return ok, lines


def main(argv: list[str]) -> int:
    """Judge OUTDIR (``steps.txt`` holds each step's exit code); print and store the verdicts."""
    out, dry = Path(argv[0]), "--dry" in argv
    steps = {}
    if (out / "steps.txt").exists():
        for line in (out / "steps.txt").read_text().splitlines():
            name, _, code = line.partition(" ")
            steps[name] = int(code)
    ok, lines = judge(out, dry, steps)
    text = "\n".join(lines) + f"\ngpu_check ({'dry run on CPU' if dry else 'GPU'}): " + (
        "all checks passed" if ok else "SOME CHECKS FAILED")
    print(text)
    (out / "verdicts.txt").write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
