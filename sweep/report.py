"""The bias report: GAN bias / L2-UVP / OT-consistency against lambda, with the closed form where the pair
has one and the OTS result as a band, and a table of the best-lambda GAN vs OTS with the spread over seeds.

Reads only files (Tune's per-trial ``result.json`` and ``params.json``), so it works without Ray.
"""

from __future__ import annotations

import base64
import html
import json
import math
import statistics
from pathlib import Path
from typing import Any

from otsr import theory
from otsr.checkpoint import atomic_write_json
from otsr.costs import kappa
from sweep.space import load_space

TABLE_METRICS = ("l2_uvp", "cos", "bias_mean_shift", "bias_sliced_w2", "bias_frechet", "ot_consistency",
                 "transport_cost", "psnr", "ssim", "psnr_bicubic", "ssim_bicubic", "lpips", "fid",
                 "bias_frechet_pool16")


def collect_trials(folder: Path) -> list[dict[str, Any]]:
    """One record per trial: phase, config, last result, whether it ran to the end or diverged."""
    out = []
    for result_file in sorted(Path(folder, "ray").glob("*/*/result.json")):
        lines = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        if not lines:
            continue
        last = lines[-1]
        params = json.loads((result_file.parent / "params.json").read_text())
        out.append({"phase": result_file.parent.parent.name, "trial_id": last.get("trial_id"),
                    "config": params, "method": params.get("method"), "lam": params.get("lam"),
                    "seed": params.get("seed"), "metrics": last, "final": bool(last.get("final")),
                    "diverged": bool(last.get("diverged"))})
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _reference_trials(trials: list[dict], method: str, best: dict[str, Any]) -> list[dict]:
    """Finished trials of ``method`` that share its best searched configuration (all of them if not searched)."""
    cfg = best.get(method) or {}
    return [t for t in trials if t["method"] == method and t["final"] and not t["diverged"]
            and all(t["config"].get(k) == v for k, v in cfg.items())]


def summarise(folder: Path) -> dict[str, Any]:
    """The report's numbers: per-trial points, best GAN lambda and its seeds, OTS seeds, the table."""
    folder = Path(folder)
    state = json.loads((folder / "state.json").read_text())
    spec = load_space(folder / "spec.yaml", state.get("overrides"))
    trials = collect_trials(folder)
    obj = spec.objectives[0]
    best = state.get("best", {})
    gan_best, ots = _reference_trials(trials, "gan", best), _reference_trials(trials, "ots", best)
    best_cfg = best.get("gan")
    refs = {t["trial_id"] for t in gan_best + ots}
    for t in trials:
        t["reference"] = t["trial_id"] in refs
    rows = []
    for m in TABLE_METRICS:
        g, o = _mean_std([t["metrics"].get(m) for t in gan_best]), _mean_std([t["metrics"].get(m) for t in ots])
        if not (math.isnan(g[0]) and math.isnan(o[0])):
            rows.append({"metric": m, "gan_mean": g[0], "gan_std": g[1], "ots_mean": o[0], "ots_std": o[1]})
    headline = {}
    for r in rows:
        if r["metric"] in ("l2_uvp", "bias_sliced_w2", "psnr", obj.metric):
            headline[f"best_gan_{r['metric']}"] = r["gan_mean"]
            headline[f"ots_{r['metric']}"] = r["ots_mean"]
    headline = {k: v for k, v in headline.items() if math.isfinite(v)}
    return {"sweep": folder.name, "pair": spec.pair, "objective": [o.__dict__ for o in spec.objectives],
            "best_gan": best_cfg, "gan_best_seeds": len(gan_best), "ots_seeds": len(ots), "table": rows,
            "headline": headline, "trials": [{k: t[k] for k in ("phase", "trial_id", "method", "lam", "seed",
                                                                "final", "diverged", "reference")}
                                             | {"metrics": {k: t["metrics"].get(k) for k in TABLE_METRICS}}
                                             for t in trials],
            "counts": {"trials": len(trials), "completed": sum(t["final"] and not t["diverged"] for t in trials),
                       "diverged": sum(t["diverged"] for t in trials),
                       "stopped_early": sum(not t["final"] for t in trials)},
            "gp": spec.methods[[m.method for m in spec.methods].index("gan")].fixed.get("gp", 10.0)
            if "gan" in [m.method for m in spec.methods] else None}


def format_table(summary: dict[str, Any]) -> str:
    """Markdown table: best-lambda GAN vs OTS, mean ± std over seeds."""
    best = summary["best_gan"]
    head = f"GAN (best: {', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in best.items())})" \
        if best else "GAN (best)"
    lines = [f"| metric | {head}, n={summary['gan_best_seeds']} | OTS, n={summary['ots_seeds']} |",
             "|---|---|---|"]
    for r in summary["table"]:
        lines.append(f"| {r['metric']} | {r['gan_mean']:.4g} ± {r['gan_std']:.2g} | "
                     f"{r['ots_mean']:.4g} ± {r['ots_std']:.2g} |")
    return "\n".join(lines)


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = summary["trials"]
    gan = [t for t in trials if t["method"] == "gan" and not t["diverged"] and t["lam"] is not None]
    ots = [t for t in trials if t["method"] == "ots" and t["reference"]]
    pair = summary["pair"]
    shift_pair = pair["name"] == "gaussian-shift"
    bias_key = "bias_mean_shift" if shift_pair else "bias_sliced_w2"
    panels = [(bias_key, "bias of T#P vs Q (" + ("mean shift = W1" if shift_pair else "sliced W2") + ")"),
              ("l2_uvp", "L2-UVP (%)"), ("ot_consistency", "OT-consistency")]
    objs = summary["objective"]
    fig, axes = plt.subplots(1, 3 + (len(objs) == 2), figsize=(15 + 5 * (len(objs) == 2), 4.2))
    lams = [max(t["lam"], 1e-6) for t in gan]
    lo, hi = (min(lams) / 2, max(lams) * 2) if lams else (1e-3, 1e3)
    if len(objs) == 2:
        _pareto_panel(axes[3], gan, ots, objs)
    for ax, (key, title) in zip(axes, panels):
        for done, marker, label in ((True, "o", "GAN trial"), (False, "x", "GAN, stopped early")):
            pts = [(max(t["lam"], 1e-6), t["metrics"].get(key)) for t in gan if t["final"] == done]
            pts = [(x, y) for x, y in pts if y is not None and math.isfinite(y)]
            if pts:
                ax.scatter(*zip(*pts), marker=marker, color="tab:red", alpha=0.8 if done else 0.4, label=label)
        m, s = _mean_std([t["metrics"].get(key) for t in ots])
        if math.isfinite(m):
            ax.axhspan(m - max(s, 1e-3 * abs(m)), m + max(s, 1e-3 * abs(m)), color="tab:blue", alpha=0.25,
                       label=f"OTS (no λ), n={len(ots)}")
            ax.axhline(m, color="tab:blue", lw=1)
        if shift_pair and key in ("bias_mean_shift", "l2_uvp") and summary.get("gp"):
            import numpy as np

            xs = np.logspace(math.log10(lo), math.log10(hi), 200)
            dn, d = pair["params"]["shift"], pair["params"]["dim"]
            k = kappa("mean", d)
            s_gp = [theory.gan_gp_shift(x, summary["gp"], dn, k) for x in xs]
            s_1l = [theory.gan_shift(x, dn, k) for x in xs]
            f = (lambda s: theory.shift_bias(s, dn)) if key == "bias_mean_shift" else \
                (lambda s: theory.shift_l2_uvp(s, dn, d))
            ax.plot(xs, [f(s) for s in s_gp], "k-", lw=1, label="closed form, WGAN-GP")
            ax.plot(xs, [f(s) for s in s_1l], "k--", lw=1, label="closed form, 1-Lipschitz")
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.set_xlabel("λ (content-loss weight)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{summary['sweep']}: GAN bias vs λ against OTS on {pair['name']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pareto_panel(ax, gan: list[dict], ots: list[dict], objs: list[dict]) -> None:
    """Multi-objective sweeps: the GAN trials in the plane of the two objectives, OTS as reference points."""
    a, b = objs[0]["metric"], objs[1]["metric"]
    for group, colour, label in ((gan, "tab:red", "GAN trials"), (ots, "tab:blue", "OTS")):
        pts = [(t["metrics"].get(a), t["metrics"].get(b)) for t in group if t["final"]]
        pts = [(x, y) for x, y in pts if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
        if pts:
            ax.scatter(*zip(*pts), color=colour, label=label)
    ax.set_xlabel(f"{a} ({objs[0]['mode']})")
    ax.set_ylabel(f"{b} ({objs[1]['mode']})")
    ax.set_title("trade-off (Pareto view)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def write_report(folder: Path) -> dict[str, Any]:
    """Write report.png, report.md, report.html and report.json into the sweep folder; print the table."""
    folder = Path(folder)
    summary = summarise(folder)
    table = format_table(summary)
    _plot(summary, folder / "report.png")
    counts = summary["counts"]
    text = (f"# Bias report: {summary['sweep']}\n\npair: {summary['pair']['name']} {summary['pair']['params']}\n\n"
            f"trials: {counts['trials']} ({counts['completed']} completed, {counts['stopped_early']} stopped early "
            f"by ASHA, {counts['diverged']} diverged)\n\n{table}\n")
    (folder / "report.md").write_text(text)
    png = base64.b64encode((folder / "report.png").read_bytes()).decode()
    rows = "".join(f"<tr><td>{html.escape(r['metric'])}</td><td>{r['gan_mean']:.4g} ± {r['gan_std']:.2g}</td>"
                   f"<td>{r['ots_mean']:.4g} ± {r['ots_std']:.2g}</td></tr>" for r in summary["table"])
    (folder / "report.html").write_text(
        f"<html><head><meta charset='utf-8'><title>{html.escape(summary['sweep'])}</title></head><body>"
        f"<h1>Bias report: {html.escape(summary['sweep'])}</h1><p>{html.escape(text.splitlines()[2])}</p>"
        f"<img src='data:image/png;base64,{png}' style='max-width:100%'/>"
        f"<table border='1' cellpadding='4'><tr><th>metric</th><th>GAN, best λ</th><th>OTS</th></tr>{rows}"
        f"</table></body></html>")
    atomic_write_json(folder / "report.json", summary)
    print(text)
    return summary
