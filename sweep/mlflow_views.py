"""Saved views of a sweep experiment in MLflow's UI, so the runs table opens on the comparison instead of one
collapsed parent row with no columns: MLflow 3 keeps a saved view as an experiment tag
``mlflow.sharedViewState.<id>`` (what its own "Save view" button writes) and opens it from the URL parameter
``viewStateShareKey`` (no other URL parameter chooses columns or grouping; checked in headless Chromium).

Two views: ``otsr-compare`` (the swept methods' knobs (λ), seed, role, outcome and the pair's headline metrics as
columns, runs grouped by role: search / best / the references with their averages) and ``otsr-lambda`` (the
same, in chart mode, with scatter plots of the headline metrics against log10 of each knob).
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


def swept_knobs(methods) -> list[str]:
    """The knobs the sweep's methods (names) are swept along, in order (``lam`` for the GAN)."""
    return list(dict.fromkeys(METHODS[m].swept for m in methods if m in METHODS and METHODS[m].swept))


def _state(metrics: list[str], charts: bool, knobs: list[str]) -> dict:
    cols = [c for k in knobs for c in (f"params.`{k}`", f"params.`log10_{k}`")] + [
        "params.`lr_map`", "params.`seed`", "tags.`role`", "tags.`otsr.outcome`"] + [
        f"metrics.`eval/{m}`" for m in metrics]
    state = {"searchFilter": "", "orderByKey": "attributes.start_time", "orderByAsc": False, "startTime": "ALL",
             "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
             "selectedColumns": cols, "columnOrder": [], "columnWidths": {}, "runsHiddenMode": "SHOWALL",
             "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "role"}]},
             "groupsExpanded": {}, "useGroupedValuesInCharts": False, "hideEmptyCharts": True,
             "isAccordionReordered": charts}
    if charts:
        names = ", ".join(_symbol(k) for k in knobs) or "the knob"
        section = {"uuid": "otsr-lambda", "name": f"metrics against log10 {names}", "display": True,
                   "isReordered": False}
        state["compareRunSections"] = [section]
        state["compareRunCharts"] = [
            {"uuid": f"otsr-scatter-{m}" + (f"-{k}" if i else ""), "type": "SCATTER", "runsCountToCompare": 100,
             "metricSectionId": "otsr-lambda", "deleted": False, "isGenerated": False,
             "displayName": f"log10 {_symbol(k)} vs {m}",
             "xaxis": {"key": f"log10_{k}", "type": "PARAM"}, "yaxis": {"key": f"eval/{m}", "type": "METRIC"}}
            for i, k in enumerate(knobs) for m in metrics]
        state["chartsSearchFilter"] = ""
    return state


def _symbol(knob: str) -> str:
    return next((m.symbol for m in METHODS.values() if m.swept == knob), knob)


def view_tags(objective: str, headline: Headline, methods) -> dict[str, str]:
    """The experiment tags that hold the two saved views of a sweep of ``methods`` (names)."""
    metrics, knobs = headline_metrics(objective, headline), swept_knobs(methods)
    now = int(time.time() * 1000)
    out = {}
    for view, charts in ((COMPARE, False), (LAMBDA, True)):
        envelope = {"name": view, "createdAt": now, "updatedAt": now,
                    "state": json.dumps(_state(metrics, charts, knobs))}
        out[f"mlflow.sharedViewState.{view}"] = json.dumps(envelope)
    return out


def view_urls(base: str, experiment_id: str) -> dict[str, str]:
    """The runs table opened on each saved view (MLflow's machine-learning page, not its GenAI one)."""
    root = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
    return {COMPARE: f"{root}?viewStateShareKey={COMPARE}&workflowType=machine_learning",
            LAMBDA: f"{root}?viewStateShareKey={LAMBDA}&compareRunsMode=CHART&workflowType=machine_learning"}
