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
from otsr.metric_registry import METRICS, table_metrics
from sweep.tracking import member_run_name, ui_base


def collect_trials(folder: Path) -> list[dict[str, Any]]:
    """One record per member configuration: phase, settings, last metrics, how it ended (otsr's state file)."""
    state = json.loads((Path(folder) / "state.json").read_text())
    spec = json.loads((Path(folder) / "resolved.json").read_text())
    out = []
    for key, m in sorted(state.get("members", {}).items()):
        method = spec["methods"].get(m["phase"].split("-")[0], {})
        config = {**method.get("config", {}), **m["settings"]}
        out.append({"phase": m["phase"], "trial_id": key, "config": config, "method": config.get("method"),
                    "lam": config.get("lam") if config.get("method") == "gan" else None,
                    "seed": config.get("seed"), "metrics": {**m["metrics"], "step": m["step"],
                                                            "reason": m.get("reason"), "node_id": m.get("node_id"),
                                                            "resumed_from": m.get("resumed_from", 0)},
                    "final": m["status"] == "completed", "diverged": m["status"] in ("diverged", "error"),
                    "status": m["status"], "role": m.get("role")})
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
    spec = json.loads((folder / "resolved.json").read_text())
    trials = collect_trials(folder)
    runs = json.loads((folder / "tracking_runs.json").read_text()) if (folder / "tracking_runs.json").exists() else {}
    obj = spec["objectives"][0]
    best = state.get("best", {})
    gan_best, ots = _reference_trials(trials, "gan", best), _reference_trials(trials, "ots", best)
    best_cfg = best.get("gan")
    refs = {t["trial_id"] for t in gan_best + ots}
    for t in trials:
        t["reference"] = t["trial_id"] in refs
    rows = []
    for m in table_metrics():
        g, o = _mean_std([t["metrics"].get(m) for t in gan_best]), _mean_std([t["metrics"].get(m) for t in ots])
        if not (math.isnan(g[0]) and math.isnan(o[0])):
            rows.append({"metric": m, "gan_mean": g[0], "gan_std": g[1], "ots_mean": o[0], "ots_std": o[1]})
    headline = {}
    for r in rows:
        if r["metric"] in ("l2_uvp", "bias_sliced_w2", "psnr", obj["metric"]):
            headline[f"best_gan_{r['metric']}"] = r["gan_mean"]
            headline[f"ots_{r['metric']}"] = r["ots_mean"]
    headline = {k: v for k, v in headline.items() if math.isfinite(v)}
    gan = spec["methods"].get("gan", {})
    unbiased_not_ot = _biased_less_but_not_ot(trials, ots)
    return {"sweep": folder.name, "pair": spec["pair"], "objective": spec["objectives"],
            "best_gan": best_cfg, "gan_best_seeds": len(gan_best), "ots_seeds": len(ots), "table": rows,
            "headline": headline, "trials": [{k: t[k] for k in ("phase", "trial_id", "method", "lam", "seed",
                                                                "final", "diverged", "reference", "status", "role")}
                                             | {"metrics": {k: t["metrics"].get(k) for k in table_metrics()},
                                                "step": t["metrics"].get("step"), "name": _trial_name(t, spec),
                                                "reason": t["metrics"].get("reason"),
                                                "run_id": runs.get(t["trial_id"])}
                                             for t in trials],
            "baselines": spec.get("baselines", {}), "steps": spec.get("steps"),
            "scheduler": (spec.get("scheduler") or {}).get("type"),
            "tracking": {"uri": state.get("tracking_uri"), "experiment_id": state.get("experiment_id"),
                         "parent": runs.get("parent")},
            "counts": {"trials": len(trials), "completed": sum(t["status"] == "completed" for t in trials),
                       "diverged": sum(t["diverged"] for t in trials),
                       "stopped_early": sum(t["status"] == "stopped" for t in trials),
                       "unfinished": sum(t["status"] not in ("completed", "stopped", "diverged", "error")
                                         for t in trials)},
            "chosen_by": obj, "less_biased_not_ot": unbiased_not_ot,
            "gan_cost": gan.get("config", {}).get("cost"),
            "gp": (best_cfg or {}).get("gp", gan.get("config", {}).get("gp")) if gan else None}


def _trial_name(t: dict[str, Any], spec: dict[str, Any]) -> str:
    return member_run_name(t["config"], (spec["methods"].get(t["method"]) or {}).get("searched", []))


def _biased_less_but_not_ot(trials: list[dict], ots: list[dict]) -> list[dict[str, Any]]:
    """GAN members that ended less biased than OTS (sliced W2 of T#P to Q) yet farther from the OT map (L2-UVP)
    or less OT-consistent: matching Q's samples is not being the OT map (the paper's point)."""
    bias_ots, _ = _mean_std([t["metrics"].get("bias_sliced_w2") for t in ots])
    uvp_ots, _ = _mean_std([t["metrics"].get("l2_uvp") for t in ots])
    if not math.isfinite(bias_ots):
        return []
    out = []
    for t in trials:
        m = t["metrics"]
        if t["method"] != "gan" or t["status"] != "completed" or not m.get("bias_sliced_w2", math.inf) < bias_ots:
            continue
        if math.isfinite(uvp_ots) and m.get("l2_uvp", -math.inf) > uvp_ots:
            out.append({"trial_id": t["trial_id"], "lam": t["lam"], "bias_sliced_w2": m["bias_sliced_w2"],
                        "l2_uvp": m.get("l2_uvp"), "ot_consistency": m.get("ot_consistency")})
    return out


def format_table(summary: dict[str, Any]) -> str:
    """Markdown table: best-lambda GAN vs OTS, mean ± std over seeds, which way each metric is better, and the
    sampling-noise floor of the bias metrics (what a map with T#P = Q scores on the evaluation's samples)."""
    best = summary["best_gan"]
    head = f"GAN (best: {', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in best.items())})" \
        if best else "GAN (best)"
    floor = (summary.get("baselines") or {}).get("noise_floor") or {}
    lines = [f"| metric | better | {head}, n={summary['gan_best_seeds']} | OTS, n={summary['ots_seeds']} | "
             "noise floor |", "|---|---|---|---|---|"]
    for r in summary["table"]:
        better = {"min": "lower", "max": "higher"}.get(getattr(METRICS.get(r["metric"]), "better", ""), "")
        lines.append(f"| {r['metric']} | {better} | {r['gan_mean']:.4g} ± {r['gan_std']:.2g} | "
                     f"{r['ots_mean']:.4g} ± {r['ots_std']:.2g} | {_num(floor.get(r['metric']))} |")
    return "\n".join(lines)


def explain(summary: dict[str, Any]) -> list[str]:
    """The sentences under the table: how the lambda was chosen, and the GAN trials that match Q better than OTS
    while not being the OT map."""
    obj = summary.get("chosen_by") or {}
    out = []
    if summary.get("best_gan"):
        out.append(f"The GAN's best configuration was chosen by {obj.get('metric')} ({obj.get('mode')}) among the "
                   f"search's completed trials, then run again with the other seeds.")
    for t in summary.get("less_biased_not_ot", []):
        out.append(f"GAN λ={t['lam']:.3g} ended less biased than OTS (sliced W2 {t['bias_sliced_w2']:.3g}) but is "
                   f"not the OT map: L2-UVP {_num(t.get('l2_uvp'))} %, OT-consistency {_num(t.get('ot_consistency'))}.")
    return out


def comparison_table(summary: dict[str, Any]) -> dict[str, list]:
    """The best-lambda GAN vs OTS table as MLflow table columns (one row per metric)."""
    floor = (summary.get("baselines") or {}).get("noise_floor") or {}
    rows = summary["table"]
    return {"metric": [r["metric"] for r in rows],
            "better": [getattr(METRICS.get(r["metric"]), "better", "") for r in rows],
            "gan_best_mean": [r["gan_mean"] for r in rows], "gan_best_std": [r["gan_std"] for r in rows],
            "ots_mean": [r["ots_mean"] for r in rows], "ots_std": [r["ots_std"] for r in rows],
            "noise_floor": [floor.get(r["metric"]) for r in rows]}


def parent_note(summary: dict[str, Any]) -> str:
    """The sweep run's description in the MLflow UI: the table and its explanation."""
    return f"Bias report of {summary['sweep']}\n\n{format_table(summary)}\n\n" + "\n".join(explain(summary))


def _panels(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric, title) per panel: bias first, then accuracy (L2-UVP, or PSNR for SR), then OT-consistency."""
    shift_pair = summary["pair"]["name"] == "gaussian-shift"
    trials = summary["trials"]
    has = lambda k: any(t["metrics"].get(k) is not None for t in trials)  # noqa: E731
    bias = "bias_mean_shift" if shift_pair else "bias_frechet_hf" if has("bias_frechet_hf") \
        else "bias_sliced_w2"
    bias_title = {"bias_mean_shift": "bias of T#P vs Q (mean shift = W1)",
                  "bias_frechet_hf": "bias of T#P vs Q (Fréchet of high-pass patches)",
                  "bias_sliced_w2": "bias of T#P vs Q (sliced W2)"}[bias]
    accuracy = ("l2_uvp", "L2-UVP (%) to the true OT map") if has("l2_uvp") else ("psnr", "PSNR (dB) on validation")
    return [(bias, bias_title), accuracy,
            ("ot_consistency", "OT-consistency: share of the optimal\nassignment x_i -> T(x_i) that is the identity")]


def theory_curves(summary: dict[str, Any], key: str, lams) -> tuple[list[float], list[float]]:
    """The gaussian-shift closed forms of ``key`` (bias_mean_shift or l2_uvp) against lambda, for the WGAN-GP
    equilibrium and the 1-Lipschitz one, with the sweep's own GAN cost (kappa) and gradient-penalty weight."""
    pair = summary["pair"]
    dn, d = pair["params"]["shift"], pair["params"]["dim"]
    k = kappa(summary["gan_cost"], d)
    f = (lambda s: theory.shift_bias(s, dn)) if key == "bias_mean_shift" else (lambda s: theory.shift_l2_uvp(s, dn, d))
    return ([f(theory.gan_gp_shift(x, summary["gp"], dn, k)) for x in lams],
            [f(theory.gan_shift(x, dn, k)) for x in lams])


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    trials = summary["trials"]
    gan = [t for t in trials if t["method"] == "gan" and not t["diverged"] and t["lam"] is not None]
    ots = [t for t in trials if t["method"] == "ots" and t["reference"]]
    pair = summary["pair"]
    shift_pair = pair["name"] == "gaussian-shift"
    objs = summary["objective"]
    panels = _panels(summary)
    fig, axes = plt.subplots(1, 3 + (len(objs) == 2), figsize=(16 + 5 * (len(objs) == 2), 4.6))
    lams = [max(t["lam"], 1e-6) for t in gan]
    lo, hi = (min(lams) / 2, max(lams) * 2) if lams else (1e-3, 1e3)
    if len(objs) == 2:
        _pareto_panel(axes[3], gan, ots, objs)
    best_lam = (summary.get("best_gan") or {}).get("lam")
    baselines = summary.get("baselines", {})
    for ax, (key, title) in zip(axes, panels):
        done = [(max(t["lam"], 1e-6), t["metrics"].get(key)) for t in gan if t["final"]]
        done = [(x, y) for x, y in done if y is not None and math.isfinite(y)]
        if done:
            ax.scatter(*zip(*done), marker="o", color="tab:red", alpha=0.8, label="GAN trial (full budget)")
        early = [(max(t["lam"], 1e-6), t["metrics"].get(key), t.get("step")) for t in gan if not t["final"]]
        early = [(x, y, st) for x, y, st in early if y is not None and math.isfinite(y)]
        if early:
            steps = sorted({st for _, _, st in early})
            ax.scatter([x for x, _, _ in early], [y for _, y, _ in early], marker="x", color="tab:red", alpha=0.45,
                       label=f"GAN, stopped early by {summary.get('scheduler', 'ASHA').upper()} (scored at step "
                             f"{', '.join(str(st) for st in steps[:3])}{'…' if len(steps) > 3 else ''})")
        m, s = _mean_std([t["metrics"].get(key) for t in ots])
        if math.isfinite(m):
            ax.axhspan(m - max(s, 1e-3 * abs(m)), m + max(s, 1e-3 * abs(m)), color="tab:blue", alpha=0.25,
                       label=f"OTS (no λ), n={len(ots)}")
            ax.axhline(m, color="tab:blue", lw=1)
        ident = (baselines.get("identity") or {}).get(key)
        if ident is not None and math.isfinite(ident):
            ax.axhline(ident, color="0.4", ls=":", lw=1.2,
                       label="identity map" if key != "psnr" else "bicubic (the maps' start)")
        affine = (baselines.get("best_affine") or {}).get(key)
        if affine is not None and math.isfinite(affine):
            ax.axhline(affine, color="tab:green", ls="-.", lw=1.2, label="best affine map")
        floor = (baselines.get("noise_floor") or {}).get(key)
        if floor is not None and math.isfinite(floor):
            ax.axhline(floor, color="tab:purple", ls=(0, (1, 1)), lw=1.2,
                       label="sampling-noise floor (Q vs Q: a map with T#P = Q)")
        if best_lam is not None:
            ax.axvline(max(best_lam, 1e-6), color="tab:red", ls="--", lw=1, label=f"chosen λ = {best_lam:.3g}")
        if shift_pair and key in ("bias_mean_shift", "l2_uvp") and summary.get("gp"):
            xs = np.logspace(math.log10(lo), math.log10(hi), 200)
            gp_curve, lip_curve = theory_curves(summary, key, xs)
            ax.plot(xs, gp_curve, "k-", lw=1, label=f"closed form, WGAN-GP (γ={summary['gp']:g})")
            ax.plot(xs, lip_curve, "k--", lw=1, label="closed form, 1-Lipschitz")
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.set_xlabel("λ (content-loss weight)")
        ax.set_ylabel(key)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
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


def _html(summary: dict[str, Any], text: str, png: str, rows: str) -> str:
    tr = summary.get("tracking") or {}
    base = ui_base(str(tr.get("uri", "")))

    def link(rid: str | None) -> str:
        if not rid:
            return ""
        if base is None:  # a local store: no server address to link to (`otsr-sweep ui` serves it)
            return f"MLflow run {html.escape(rid[:8])}"
        return f"<a href='{base}/#/experiments/{tr.get('experiment_id')}/runs/{rid}'>MLflow run</a>"

    keys = [k for k in table_metrics() if any(t["metrics"].get(k) is not None for t in summary["trials"])]
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    trial_rows = []
    for t in sorted(summary["trials"], key=lambda t: (t["phase"], t["method"], t.get("lam") or 0, t["seed"] or 0)):
        status = {"completed": "done", "stopped": f"stopped early at step {t.get('step')}"}.get(
            t.get("status"), t.get("status") or "?")
        cells = "".join(f"<td>{_num(t['metrics'].get(k))}</td>" for k in keys)
        trial_rows.append(f"<tr><td>{html.escape(t['phase'])}</td><td>{html.escape(t['name'])}</td>"
                          f"<td>{html.escape(status)}</td>{cells}<td>{link(t.get('run_id'))}</td></tr>")
    return (f"<html><head><meta charset='utf-8'><title>{html.escape(summary['sweep'])}</title></head><body>"
            f"<h1>Bias report: {html.escape(summary['sweep'])}</h1><p>{html.escape(text.splitlines()[2])}</p>"
            f"<p>{html.escape(text.splitlines()[4])} {link(tr.get('parent')).replace('MLflow run', 'sweep run')}</p>"
            f"<img src='data:image/png;base64,{png}' style='max-width:100%'/>"
            f"<h2>Best-λ GAN against OTS</h2>"
            f"<table border='1' cellpadding='4'><tr><th>metric</th><th>better</th><th>GAN, best λ</th><th>OTS</th>"
            f"<th>noise floor</th></tr>{rows}</table>"
            + "".join(f"<p>{html.escape(line)}</p>" for line in explain(summary))
            + "<h2>Every configuration</h2><table border='1' cellpadding='3'><tr><th>phase</th><th>trial</th>"
            f"<th>status</th>{head}<th></th></tr>{''.join(trial_rows)}</table></body></html>")


def _num(v) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) and math.isfinite(v) else "–"


def write_report(folder: Path) -> dict[str, Any]:
    """Write report.png, report.md, report.html and report.json into the sweep folder; print the table."""
    folder = Path(folder)
    summary = summarise(folder)
    table = format_table(summary)
    _plot(summary, folder / "report.png")
    counts = summary["counts"]
    stopped = f", {counts['stopped_early']} stopped early by ASHA" if counts["stopped_early"] else ""
    text = (f"# Bias report: {summary['sweep']}\n\npair: {summary['pair']['name']} {summary['pair']['params']}\n\n"
            f"configurations: {counts['trials']} ({counts['completed']} completed{stopped}, {counts['diverged']} "
            f"diverged or failed)\n\n{table}\n\n" + "".join(f"{line}\n" for line in explain(summary)))
    (folder / "report.md").write_text(text)
    png = base64.b64encode((folder / "report.png").read_bytes()).decode()
    floor = (summary.get("baselines") or {}).get("noise_floor") or {}
    rows = "".join(f"<tr><td>{html.escape(r['metric'])}</td>"
                   f"<td>{getattr(METRICS.get(r['metric']), 'better', '')}</td>"
                   f"<td>{r['gan_mean']:.4g} ± {r['gan_std']:.2g}</td>"
                   f"<td>{r['ots_mean']:.4g} ± {r['ots_std']:.2g}</td><td>{_num(floor.get(r['metric']))}</td></tr>"
                   for r in summary["table"])
    (folder / "report.html").write_text(_html(summary, text, png, rows))
    atomic_write_json(folder / "report.json", summary)
    print(text)
    return summary
