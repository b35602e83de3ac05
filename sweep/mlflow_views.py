"""Saved views of a sweep experiment in MLflow's UI, so the runs table opens on the comparison instead of one
collapsed parent row with no columns: MLflow 3 keeps a saved view as an experiment tag
``mlflow.sharedViewState.<id>`` (what its own "Save view" button writes) and opens it from the URL parameter
``viewStateShareKey`` (no other URL parameter chooses columns or grouping; checked in headless Chromium).

Two views: ``otsr-compare`` (the pair's headline metrics first, then role and outcome, the swept methods' knobs
(λ, logged as a metric so the runs sort by it numerically), seed, and the headline relative to each reference;
the member runs grouped by role: search ordered by λ / best / the references with their averages; the sweep's
own run is filtered out) and ``otsr-lambda`` (the same, in chart mode, with scatter plots against log10 of each
knob: first of the headline metrics ÷ the reference's mean, where 1 is the reference (OTS), then of the metrics
themselves; the reference runs stand one decade left of the swept range, ``tracking.reference_positions``).
MLflow 3.17's scatter plots have no log axis, hence log10 of the knob on x.
"""

from __future__ import annotations

import json
import time

from otsr.methods import METHODS
from otsr.metric_registry import Headline

COMPARE, LAMBDA = "otsr-compare", "otsr-lambda"


def headline_metrics(objective: str, headline: Headline) -> list[str]:
    """The metrics a comparison shows: the objective first, then the pair's headline (``Pair.headline``)."""
    return list(dict.fromkeys([objective, *headline.names()]))


def references(methods) -> list[str]:
    """The sweep's reference methods (names; ``ots``), what the swept runs are divided by."""
    return [m for m in methods if m in METHODS and METHODS[m].reference]


def swept_knobs(methods) -> list[str]:
    """The knobs the sweep's methods (names) are swept along, in order (``lam`` for the GAN)."""
    return list(dict.fromkeys(METHODS[m].swept for m in methods if m in METHODS and METHODS[m].swept))


SHOWN = "tags.`role` != 'sweep'"  # member runs only: the sweep's own run is not a group of the comparison


def relative_key(reference: str, metric: str) -> str:
    """The metric a swept run logs once the reference has finished: its value ÷ the reference's mean."""
    return f"rel_{reference}/{metric}"


def _width(label: str) -> int:
    return max(100, 8 * len(label) + 36)  # MLflow's default width cuts 'eval/bias_sliced_w2' to 'eval/bias_slic'


def _columns(metrics: list[str], knobs: list[str], refs: list[str]) -> list[str]:
    """The comparison's columns in reading order: the headline, role and outcome, the knobs, seed, learning rate,
    then the headline relative to each reference."""
    return ([f"metrics.`eval/{m}`" for m in metrics] + ["tags.`role`", "tags.`otsr.outcome`"]
            + [f"metrics.`{k}`" for k in knobs] + ["tags.`seed`", "params.`lr_map`"]
            + [f"metrics.`{relative_key(r, m)}`" for r in refs for m in metrics])


def _state(metrics: list[str], charts: bool, knobs: list[str], refs: list[str],
           reference_x: dict[str, float]) -> dict:
    cols = _columns(metrics, knobs, refs)
    state = {"searchFilter": SHOWN, "orderByKey": f"metrics.`{knobs[0]}`" if knobs else "attributes.start_time",
             "orderByAsc": bool(knobs), "startTime": "ALL",
             "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
             "selectedColumns": cols, "columnOrder": cols,
             "columnWidths": {c: _width(c.split("`")[1]) for c in cols if c.startswith("metrics.")},
             "runsHiddenMode": "SHOWALL",
             "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "role"}]},
             "groupsExpanded": {}, "useGroupedValuesInCharts": False, "hideEmptyCharts": True,
             "isAccordionReordered": charts}
    if charts:
        names = ", ".join(_symbol(k) for k in knobs) or "the knob"
        where = "; ".join(f"{r.upper()} at {reference_x[k]:g}" for r in refs for k in knobs if k in reference_x)
        names += f" ({where})" if where else ""
        sections = [{"uuid": f"otsr-rel-{r}", "name": f"÷ {r.upper()} mean vs log10 {names}", "display": True,
                     "isReordered": False} for r in refs]
        sections.append({"uuid": "otsr-lambda", "name": f"metrics vs log10 {names}", "display": True,
                         "isReordered": False})
        state["compareRunSections"] = sections
        state["compareRunCharts"] = [
            _scatter(f"otsr-rel-{r}-{m}-{k}", f"otsr-rel-{r}", k, relative_key(r, m),
                     f"{m} ÷ {r.upper()} vs log10 {_symbol(k)}") for k in knobs for r in refs for m in metrics] + [
            _scatter(f"otsr-scatter-{m}" + (f"-{k}" if i else ""), "otsr-lambda", k, f"eval/{m}",
                     f"log10 {_symbol(k)} vs {m}") for i, k in enumerate(knobs) for m in metrics]
        state["chartsSearchFilter"] = ""
    return state


def _scatter(uuid: str, section: str, knob: str, metric: str, name: str) -> dict:
    return {"uuid": uuid, "type": "SCATTER", "runsCountToCompare": 100, "metricSectionId": section, "deleted": False,
            "isGenerated": False, "displayName": name, "xaxis": {"key": f"log10_{knob}", "type": "PARAM"},
            "yaxis": {"key": metric, "type": "METRIC"}}


def _symbol(knob: str) -> str:
    return next((m.symbol for m in METHODS.values() if m.swept == knob), knob)


def view_tags(objective: str, headline: Headline, methods,
              reference_x: dict[str, float] | None = None) -> dict[str, str]:
    """The experiment tags that hold the two saved views of a sweep of ``methods`` (names); ``reference_x``: where
    the reference runs stand on each knob's axis (``tracking.reference_positions``), named in the charts' titles."""
    metrics, knobs, refs = headline_metrics(objective, headline), swept_knobs(methods), references(methods)
    now = int(time.time() * 1000)
    out = {}
    for view, charts in ((COMPARE, False), (LAMBDA, True)):
        envelope = {"name": view, "createdAt": now, "updatedAt": now,
                    "state": json.dumps(_state(metrics, charts, knobs, refs, reference_x or {}))}
        out[f"mlflow.sharedViewState.{view}"] = json.dumps(envelope)
    return out


def view_urls(base: str, experiment_id: str) -> dict[str, str]:
    """The runs table opened on each saved view (MLflow's machine-learning page, not its GenAI one)."""
    root = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
    return {COMPARE: f"{root}?viewStateShareKey={COMPARE}&workflowType=machine_learning",
            LAMBDA: f"{root}?viewStateShareKey={LAMBDA}&compareRunsMode=CHART&workflowType=machine_learning"}
