"""The bias report: each swept method (the GAN) against its knob (lambda), bias / accuracy / OT-consistency
per panel, with the closed form where the pair has one and the reference methods (OTS) as bands, and a table of
the best swept configurations against the references with the spread over seeds.

Which methods are swept or references, and along which knob, is what each method declares (``otsr.methods``);
which metrics head the comparison is what the pair declares (``Pair.headline``, kept in ``resolved.json``).
Reads only otsr's own files (``state.json`` and ``resolved.json``), so it works without Ray and without the
pair's data.
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
from otsr.methods import METHODS, Method
from otsr.metric_registry import METRICS, Headline, metric_direction, table_metrics
from sweep.mlflow_views import headline_metrics, relative_key
from sweep.records import MemberRecord, MemberStatus
from sweep.tracking import member_run_name, ui_base

PANEL_TITLES = {"bias_mean_shift": "bias of T#P vs Q (mean shift = W1)",
                "bias_frechet_hf": "bias of T#P vs Q (Fréchet of high-pass patches)",
                "bias_sliced_w2": "bias of T#P vs Q (sliced W2)", "l2_uvp": "L2-UVP (%) to the true OT map",
                "psnr": "PSNR (dB) on validation",
                "ot_consistency": "OT-consistency: share of the optimal\nassignment x_i -> T(x_i) that is the identity"}


def _method(name: str | None) -> Method | None:
    return METHODS.get(name) if name else None


def collect_trials(folder: Path) -> list[dict[str, Any]]:
    """One record per member configuration: phase, settings, the value of its method's swept knob, last metrics,
    how it ended (otsr's state file)."""
    state = json.loads((Path(folder) / "state.json").read_text())
    spec = json.loads((Path(folder) / "resolved.json").read_text())
    out = []
    for key, raw in sorted(state.get("members", {}).items()):
        m = MemberRecord.from_json(raw)
        method = spec["methods"].get(m.phase.split("-")[0], {})
        config = {**method.get("config", {}), **m.settings}
        swept = getattr(_method(config.get("method")), "swept", None)
        out.append({"phase": m.phase, "trial_id": key, "config": config, "method": config.get("method"),
                    "knob": config.get(swept) if swept else None,
                    "seed": config.get("seed"), "metrics": {**m.metrics, "step": m.step, "reason": m.reason,
                                                            "node_id": m.node_id, "resumed_from": m.resumed_from},
                    "final": m.status is MemberStatus.COMPLETED, "diverged": m.status.failed,
                    "status": m.status.value, "role": m.role})
    return out


def compared(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The sweep's methods in comparison order (swept, then references, then any other), each as
    {name, label, swept, symbol, reference}: what every part of the report reads instead of a method's name."""
    names = list(spec.get("methods", {}))
    objs = {n: _method(n) for n in names}
    order = sorted(names, key=lambda n: (0 if getattr(objs[n], "swept", None) else
                                         1 if getattr(objs[n], "reference", False) else 2, names.index(n)))
    return [{"name": n, "label": objs[n].label() if objs[n] else n.upper(),
             "swept": getattr(objs[n], "swept", None), "symbol": objs[n].symbol if objs[n] and objs[n].swept else "",
             "reference": bool(getattr(objs[n], "reference", False))} for n in order]


def sweep_headline(spec: dict[str, Any]) -> Headline:
    """The pair's headline as the sweep stored it; a folder written before it was stored builds the pair."""
    if spec.get("headline"):
        return Headline.from_dict(spec["headline"])
    from otsr.pairs import PairSpec

    return PairSpec.from_dict(spec["pair"]).build().headline()


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _table_trials(trials: list[dict], method: str, best: dict[str, Any]) -> list[dict]:
    """Finished trials of ``method`` that share its best searched configuration (all of them if not searched)."""
    cfg = best.get(method) or {}
    return [t for t in trials if t["method"] == method and t["final"] and not t["diverged"]
            and all(t["config"].get(k) == v for k, v in cfg.items())]


def _prefix(m: dict[str, Any]) -> str:
    """How a method's table columns are named: ``gan_best`` for a swept method, ``ots`` for a reference."""
    return f"{m['name']}_best" if m["swept"] else m["name"]


def summarise(folder: Path) -> dict[str, Any]:
    """The report's numbers: per-trial points, each swept method's best configuration and its seeds, the
    references' seeds, the table."""
    folder = Path(folder)
    state = json.loads((folder / "state.json").read_text())
    spec = json.loads((folder / "resolved.json").read_text())
    trials = collect_trials(folder)
    runs = json.loads((folder / "tracking_runs.json").read_text()) if (folder / "tracking_runs.json").exists() else {}
    obj = spec["objectives"][0]
    best = state.get("best", {})
    methods = compared(spec)
    head = sweep_headline(spec)
    tabled = {m["name"]: _table_trials(trials, m["name"], best) for m in methods}
    ids = {t["trial_id"] for group in tabled.values() for t in group}
    for t in trials:
        t["tabled"] = t["trial_id"] in ids
    rows = []
    for metric in table_metrics():
        row: dict[str, Any] = {"metric": metric}
        for m in methods:
            row[f"{m['name']}_mean"], row[f"{m['name']}_std"] = _mean_std(
                [t["metrics"].get(metric) for t in tabled[m["name"]]])
        if not all(math.isnan(row[f"{m['name']}_mean"]) for m in methods):
            rows.append(row)
    headline = {}
    for r in rows:
        if r["metric"] in (*head.names(), obj["metric"]):
            for m in methods:
                headline[f"{'best_' if m['swept'] else ''}{m['name']}_{r['metric']}"] = r[f"{m['name']}_mean"]
    headline = {k: v for k, v in headline.items() if math.isfinite(v)}
    swept = next((m for m in methods if m["swept"]), None)
    swept_cfg = spec["methods"][swept["name"]].get("config", {}) if swept else {}
    best_swept = best.get(swept["name"]) if swept else None
    refs = [t for m in methods if m["reference"] for t in tabled[m["name"]]]
    return {"sweep": folder.name, "pair": spec["pair"], "objective": spec["objectives"], "headline_metrics":
            head.to_dict(), "methods": methods, "best": {m["name"]: best.get(m["name"]) for m in methods if m["swept"]},
            **{f"{m['name']}_seeds": len(tabled[m["name"]]) for m in methods}, "table": rows,
            "headline": headline, "trials": [{k: t[k] for k in ("phase", "trial_id", "method", "knob", "seed",
                                                                "final", "diverged", "tabled", "status", "role")}
                                             | {"metrics": {k: t["metrics"].get(k) for k in table_metrics()},
                                                "step": t["metrics"].get("step"), "name": _trial_name(t, spec),
                                                "reason": t["metrics"].get("reason"),
                                                "run_id": runs.get(t["trial_id"])}
                                             for t in trials],
            "baselines": spec.get("baselines", {}), "steps": spec.get("steps"),
            "scheduler": (spec.get("scheduler") or {}).get("type"),
            "tracking": {"uri": state.get("tracking_uri"), "experiment_id": state.get("experiment_id"),
                         "parent": runs.get("parent")},
            "counts": {"trials": len(trials), "completed": sum(t["final"] for t in trials),
                       "diverged": sum(t["diverged"] for t in trials),
                       "stopped_early": sum(t["status"] == MemberStatus.STOPPED for t in trials),
                       "unfinished": sum(not MemberStatus(t["status"]).ended for t in trials)},
            "chosen_by": obj, "less_biased_not_ot": _biased_less_but_not_ot(trials, methods, refs, head),
            # the swept method's content cost and penalty: the gaussian-shift closed forms are drawn with them
            "gan_cost": swept_cfg.get("cost"),
            "gp": (best_swept or {}).get("gp", swept_cfg.get("gp")) if swept else None}


def _trial_name(t: dict[str, Any], spec: dict[str, Any]) -> str:
    return member_run_name(t["config"], (spec["methods"].get(t["method"]) or {}).get("searched", []))


def _biased_less_but_not_ot(trials: list[dict], methods: list[dict], refs: list[dict],
                            head: Headline) -> list[dict[str, Any]]:
    """Members of swept methods that ended less biased than the references (the headline bias of T#P to Q) yet
    farther from the OT map (the headline accuracy): matching Q's samples is not being the OT map (the paper's
    point)."""
    bias_ref, _ = _mean_std([t["metrics"].get(head.bias) for t in refs])
    acc_ref, _ = _mean_std([t["metrics"].get(head.accuracy) for t in refs]) if head.accuracy else (math.nan, 0)
    if not math.isfinite(bias_ref) or not math.isfinite(acc_ref):
        return []
    sign = 1 if metric_direction(head.accuracy) == "min" else -1
    swept = {m["name"]: m for m in methods if m["swept"]}
    out = []
    for t in trials:
        m = t["metrics"]
        if t["method"] not in swept or not t["final"] or not m.get(head.bias, math.inf) < bias_ref:
            continue
        acc = m.get(head.accuracy)
        if isinstance(acc, (int, float)) and sign * acc > sign * acc_ref:
            out.append({"trial_id": t["trial_id"], "method": t["method"], "knob": t["knob"],
                        "label": f"{swept[t['method']]['label']} {swept[t['method']]['symbol']}={t['knob']:.3g}",
                        "bias": head.bias, head.bias: m[head.bias], head.accuracy: acc,
                        "ot_consistency": m.get("ot_consistency")})
    return out


def _columns(summary: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """(method, column head) per compared method: ``GAN (best: λ=0.1, lr_map=0.001), n=2`` or ``OTS, n=2``."""
    out = []
    for m in summary["methods"]:
        best = (summary.get("best") or {}).get(m["name"])
        head = m["label"]
        if m["swept"]:
            shown = ", ".join(f"{m['symbol'] if k == m['swept'] else k}={v:.4g}" if isinstance(v, float) else
                              f"{k}={v}" for k, v in best.items()) if best else ""
            head += f" (best: {shown})" if shown else " (best)"
        out.append((m, f"{head}, n={summary.get(m['name'] + '_seeds', 0)}"))
    return out


def format_table(summary: dict[str, Any]) -> str:
    """Markdown table: the best configuration of each swept method against the references, mean ± std over
    seeds, which way each metric is better, and the sampling-noise floor of the bias metrics (what a map with
    T#P = Q scores on the evaluation's samples)."""
    floor = (summary.get("baselines") or {}).get("noise_floor") or {}
    cols = _columns(summary)
    lines = ["| metric | better | " + " | ".join(h for _, h in cols) + " | noise floor |",
             "|---|---|" + "---|" * len(cols) + "---|"]
    for r in summary["table"]:
        better = {"min": "lower", "max": "higher"}.get(getattr(METRICS.get(r["metric"]), "better", ""), "")
        cells = " | ".join(f"{r[m['name'] + '_mean']:.4g} ± {r[m['name'] + '_std']:.2g}" for m, _ in cols)
        lines.append(f"| {r['metric']} | {better} | {cells} | {_num(floor.get(r['metric']))} |")
    return "\n".join(lines)


def explain(summary: dict[str, Any]) -> list[str]:
    """The sentences under the table: how each swept method's configuration was chosen, and its trials that match
    Q better than the references while not being the OT map."""
    obj = summary.get("chosen_by") or {}
    out = []
    refs = " and ".join(m["label"] for m in summary["methods"] if m["reference"]) or "the references"
    for m in summary["methods"]:
        if (summary.get("best") or {}).get(m["name"]):
            out.append(f"The {m['label']}'s best configuration was chosen by {obj.get('metric')} ({obj.get('mode')}) "
                       f"among the search's completed trials, then run again with the other seeds"
                       f"{_by_seed(summary, m['name'], obj.get('metric'))}.")
    acc = (summary.get("headline_metrics") or {}).get("accuracy")
    for t in summary.get("less_biased_not_ot", []):
        out.append(f"{t['label']} ended less biased than {refs} ({t['bias']} {_num(t.get(t['bias']))}) but is "
                   f"not the OT map: {acc} {_num(t.get(acc))}, OT-consistency {_num(t.get('ot_consistency'))}.")
    return out


def _by_seed(summary: dict[str, Any], method: str, metric: str | None) -> str:
    """': l2_uvp 8.065 with seed 0 (the search's), 37.7 with seed 1': a choice made on one seed shows whether the
    other seeds confirm it."""
    tabled = sorted((t for t in summary.get("trials", []) if t["method"] == method and t["tabled"]),
                    key=lambda t: (t["phase"] != method, t["seed"] if t["seed"] is not None else -1))
    parts = []
    for t in tabled:
        if t["metrics"].get(metric) is not None:
            searched = " (the search's)" if t["phase"] == method else ""
            parts.append(f"{_num(t['metrics'][metric])} with seed {t['seed']}{searched}")
    return f": {metric} {', '.join(parts)}" if len(parts) > 1 else ""


def comparison_table(summary: dict[str, Any]) -> dict[str, list]:
    """The best swept configurations against the references as MLflow table columns (one row per metric)."""
    floor = (summary.get("baselines") or {}).get("noise_floor") or {}
    rows = summary["table"]
    out: dict[str, list] = {"metric": [r["metric"] for r in rows],
                            "better": [getattr(METRICS.get(r["metric"]), "better", "") for r in rows]}
    for m in summary["methods"]:
        out[f"{_prefix(m)}_mean"] = [r[f"{m['name']}_mean"] for r in rows]
        out[f"{_prefix(m)}_std"] = [r[f"{m['name']}_std"] for r in rows]
    out["noise_floor"] = [floor.get(r["metric"]) for r in rows]
    return out


def _compared_metrics(summary: dict[str, Any]) -> list[str]:
    """The objective, then the pair's headline (what the MLflow views show)."""
    return headline_metrics(summary["objective"][0]["metric"], Headline.from_dict(summary["headline_metrics"]))


def _reference_means(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each reference's mean of each compared metric over its tabled runs (the table's numbers)."""
    out = {}
    for m in summary["methods"]:
        if m["reference"]:
            runs = [t for t in summary["trials"] if t["method"] == m["name"] and t["tabled"]]
            out[m["name"]] = {k: _mean_std([t["metrics"].get(k) for t in runs])[0] for k in _compared_metrics(summary)}
    return out


def relative_metrics(summary: dict[str, Any]) -> dict[str, tuple[int, dict[str, float]]]:
    """Member key -> (its last step, ``rel_<reference>/<metric>``: its value ÷ the reference's mean) for every run
    that did not diverge, the references' own included (their spread around 1). Known once the references
    finished; MLflow plots them against log10 of the knob, where 1 is the reference."""
    means = _reference_means(summary)
    out = {}
    for t in summary["trials"]:
        if t["diverged"]:
            continue
        values = {}
        for ref, mean in means.items():
            for k, ref_value in mean.items():
                v = t["metrics"].get(k)
                if isinstance(v, (int, float)) and math.isfinite(v) and math.isfinite(ref_value) and ref_value != 0:
                    values[relative_key(ref, k)] = v / ref_value
        if values:
            out[t["trial_id"]] = (int(t.get("step") or 0), values)
    return out


def parent_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The report's numbers as the sweep run's metrics: ``gan_best/l2_uvp`` and ``ots/l2_uvp`` (mean over seeds),
    ``…_std``, and each swept method's best ÷ each reference (``rel_ots/gan_best_l2_uvp``)."""
    out = {}
    for r in summary["table"]:
        for m in summary["methods"]:
            out[f"{_prefix(m)}/{r['metric']}"] = r[f"{m['name']}_mean"]
            out[f"{_prefix(m)}/{r['metric']}_std"] = r[f"{m['name']}_std"]
            for ref in (x for x in summary["methods"] if x["reference"] and m["swept"]):
                out[relative_key(ref["name"], f"{_prefix(m)}_{r['metric']}")] = (
                    r[f"{m['name']}_mean"] / r[f"{ref['name']}_mean"] if r[f"{ref['name']}_mean"] else math.nan)
    return {k: v for k, v in out.items() if isinstance(v, float) and math.isfinite(v)}


REPORT_PNG = "get-artifact?path=report%2Freport.png&run_uuid={run_id}"  # MLflow's artifact route, from its UI's root


def runs_table(summary: dict[str, Any], limit: int = 40) -> str:
    """Markdown: every run that did not diverge, the swept ones by their knob, then the references; the compared
    metrics rounded, and ÷ the first reference's mean."""
    metrics = _compared_metrics(summary)
    swept = {m["name"]: m for m in summary["methods"] if m["swept"]}
    ref = next((m["name"] for m in summary["methods"] if m["reference"]), None)
    rel = relative_metrics(summary)
    order = {m["name"]: i for i, m in enumerate(summary["methods"])}
    trials = sorted((t for t in summary["trials"] if not t["diverged"]),
                    key=lambda t: (order.get(t["method"], 99), t["knob"] or 0, t["seed"] or 0))
    knob = " / ".join(dict.fromkeys(m["symbol"] for m in swept.values())) or "knob"
    head = ["run", knob, "seed", "role", "outcome", *metrics] + ([f"{metrics[0]} ÷ {ref.upper()}"] if ref else [])
    lines = [f"### Runs by {knob} (★ the chosen configuration)", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for t in trials[:limit]:
        cells = [t["name"] + (" ★" if t.get("role") == "best" else ""), _num(t["knob"]), str(t["seed"]),
                 str(t.get("role") or ""), str(t.get("status") or ""), *(_num(t["metrics"].get(k)) for k in metrics)]
        if ref:
            cells.append(_num(rel.get(t["trial_id"], (0, {}))[1].get(relative_key(ref, metrics[0]))))
        lines.append("| " + " | ".join(cells) + " |")
    if len(trials) > limit:
        lines.append(f"\n{len(trials) - limit} more in report.html")
    return "\n".join(lines)


def parent_note(summary: dict[str, Any]) -> str:
    """The sweep run's description in the MLflow UI (Markdown): the report figure at full size (``{run_id}`` is
    filled in when it is sent), the table and its explanation, and the runs by knob."""
    return (f"## Bias report of {summary['sweep']}\n\n![report.png]({REPORT_PNG})\n\n"
            f"[report.png]({REPORT_PNG}) · report.html, report.md and comparison.json are in the artifacts\n\n"
            f"{format_table(summary)}\n\n" + "\n".join(explain(summary))
            + f"\n\n{runs_table(summary)}\n")


def _panels(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric, title) per panel: the pair's headline, bias first, then accuracy, then OT-consistency."""
    head = Headline.from_dict(summary["headline_metrics"])
    return [(k, PANEL_TITLES.get(k, k)) for k in (head.bias, head.accuracy, head.consistency) if k]


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
    swept = [m for m in summary["methods"] if m["swept"]]
    refs = [m for m in summary["methods"] if m["reference"]]
    points = [t for t in trials if any(t["method"] == m["name"] for m in swept) and not t["diverged"]
              and t["knob"] is not None]
    pair = summary["pair"]
    shift_pair = pair["name"] == "gaussian-shift"
    objs = summary["objective"]
    panels = _panels(summary)
    n = len(panels) + (len(objs) == 2)
    cols = min(n, 2)  # two panels a row: ~1,170 px wide, what MLflow's run page shows without cutting it
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.3 * cols, 4.6 * rows + 0.4), squeeze=False)
    axes = list(axes.ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    axes = axes[:n]
    knobs = [max(t["knob"], 1e-6) for t in points]
    lo, hi = (min(knobs) / 2, max(knobs) * 2) if knobs else (1e-3, 1e3)
    if len(objs) == 2:
        _pareto_panel(axes[len(panels)], summary, objs)
    baselines = summary.get("baselines", {})
    colours = ["tab:red", "tab:orange", "tab:brown", "tab:pink"]
    bands = ["tab:blue", "tab:cyan", "tab:olive", "tab:gray"]
    for ax, (key, title) in zip(axes, panels):
        for m, colour in zip(swept, colours):
            mine = [t for t in points if t["method"] == m["name"]]
            done = [(max(t["knob"], 1e-6), t["metrics"].get(key)) for t in mine if t["final"]]
            done = [(x, y) for x, y in done if y is not None and math.isfinite(y)]
            if done:
                ax.scatter(*zip(*done), marker="o", color=colour, alpha=0.8, label=f"{m['label']} trial (full budget)")
            early = [(max(t["knob"], 1e-6), t["metrics"].get(key), t.get("step")) for t in mine if not t["final"]]
            early = [(x, y, st) for x, y, st in early if y is not None and math.isfinite(y)]
            if early:
                steps = sorted({st for _, _, st in early})
                ax.scatter([x for x, _, _ in early], [y for _, y, _ in early], marker="x", color=colour, alpha=0.45,
                           label=f"{m['label']}, stopped early by {summary.get('scheduler', 'ASHA').upper()} (scored "
                                 f"at step {', '.join(str(st) for st in steps[:3])}{'…' if len(steps) > 3 else ''})")
            best = (summary.get("best") or {}).get(m["name"]) or {}
            if best.get(m["swept"]) is not None:
                ax.axvline(max(best[m["swept"]], 1e-6), color=colour, ls="--", lw=1,
                           label=f"chosen {m['symbol']} = {best[m['swept']]:.3g}")
        for m, colour in zip(refs, bands):
            ref = [t for t in trials if t["method"] == m["name"] and t["tabled"]]
            mean, sd = _mean_std([t["metrics"].get(key) for t in ref])
            if math.isfinite(mean):
                ax.axhspan(mean - max(sd, 1e-3 * abs(mean)), mean + max(sd, 1e-3 * abs(mean)), color=colour,
                           alpha=0.25, label=f"{m['label']} (reference), n={len(ref)}")
                ax.axhline(mean, color=colour, lw=1)
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
        if shift_pair and key in ("bias_mean_shift", "l2_uvp") and summary.get("gp"):
            xs = np.logspace(math.log10(lo), math.log10(hi), 200)
            gp_curve, lip_curve = theory_curves(summary, key, xs)
            ax.plot(xs, gp_curve, "k-", lw=1, label=f"closed form, WGAN-GP (γ={summary['gp']:g})")
            ax.plot(xs, lip_curve, "k--", lw=1, label="closed form, 1-Lipschitz")
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.set_xlabel(" / ".join(dict.fromkeys(f"{m['symbol']}" for m in swept)) or "knob")
        ax.set_ylabel(key)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    against = " and ".join(m["label"] for m in refs) or "no reference"
    fig.suptitle(f"{summary['sweep']}: " + "; ".join(f"{m['label']} bias vs {m['symbol']}" for m in swept)
                 + f" against {against} on {pair['name']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pareto_panel(ax, summary: dict[str, Any], objs: list[dict]) -> None:
    """Multi-objective sweeps: the swept methods' trials in the plane of the two objectives, the references as
    reference points."""
    a, b = objs[0]["metric"], objs[1]["metric"]
    trials = summary["trials"]
    groups = [([t for t in trials if t["method"] == m["name"] and (m["swept"] or t["tabled"]) and not t["diverged"]],
               m["label"] + (" trials" if m["swept"] else "")) for m in summary["methods"]]
    for (group, label), colour in zip(groups, ["tab:blue", "tab:red", "tab:orange", "tab:brown", "tab:pink"]):
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
    for t in sorted(summary["trials"], key=lambda t: (t["phase"], t["method"], t.get("knob") or 0, t["seed"] or 0)):
        status = {MemberStatus.COMPLETED.value: "done", MemberStatus.STOPPED.value: f"stopped early at step "
                  f"{t.get('step')}"}.get(
            t.get("status"), t.get("status") or "?")
        cells = "".join(f"<td>{_num(t['metrics'].get(k))}</td>" for k in keys)
        trial_rows.append(f"<tr><td>{html.escape(t['phase'])}</td><td>{html.escape(t['name'])}</td>"
                          f"<td>{html.escape(status)}</td>{cells}<td>{link(t.get('run_id'))}</td></tr>")
    return (f"<html><head><meta charset='utf-8'><title>{html.escape(summary['sweep'])}</title></head><body>"
            f"<h1>Bias report: {html.escape(summary['sweep'])}</h1><p>{html.escape(text.splitlines()[2])}</p>"
            f"<p>{html.escape(text.splitlines()[4])} {link(tr.get('parent')).replace('MLflow run', 'sweep run')}</p>"
            f"<img src='data:image/png;base64,{png}' style='max-width:100%'/>"
            f"<h2>{html.escape(_comparison_title(summary))}</h2>"
            f"<table border='1' cellpadding='4'><tr><th>metric</th><th>better</th>"
            + "".join(f"<th>{html.escape(h)}</th>" for _, h in _columns(summary))
            + f"<th>noise floor</th></tr>{rows}</table>"
            + "".join(f"<p>{html.escape(line)}</p>" for line in explain(summary))
            + "<h2>Every configuration</h2><table border='1' cellpadding='3'><tr><th>phase</th><th>trial</th>"
            f"<th>status</th>{head}<th></th></tr>{''.join(trial_rows)}</table></body></html>")


def _comparison_title(summary: dict[str, Any]) -> str:
    swept = " and ".join(f"best-{m['symbol']} {m['label']}" for m in summary["methods"] if m["swept"])
    refs = " and ".join(m["label"] for m in summary["methods"] if m["reference"])
    return f"{swept or 'every method'} against {refs or 'no reference'}"


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
                   + "".join(f"<td>{r[m['name'] + '_mean']:.4g} ± {r[m['name'] + '_std']:.2g}</td>"
                             for m in summary["methods"])
                   + f"<td>{_num(floor.get(r['metric']))}</td></tr>" for r in summary["table"])
    (folder / "report.html").write_text(_html(summary, text, png, rows))
    atomic_write_json(folder / "report.json", summary)
    print(text)
    return summary
