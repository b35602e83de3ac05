"""Saved views of a sweep experiment in MLflow's UI, so the runs table opens on the comparison instead of one
collapsed parent row with no columns: MLflow 3 keeps a saved view as an experiment tag
``mlflow.sharedViewState.<id>`` (what its own "Save view" button writes) and opens it from the URL parameter
``viewStateShareKey`` (no other URL parameter chooses columns or grouping; checked in headless Chromium).

Two views: ``otsr-compare`` (λ, seed, role, outcome and the headline metrics as columns, runs grouped by role:
GAN search / best / OTS with their averages) and ``otsr-lambda`` (the same, in chart mode, with scatter plots of
the metrics against log10 λ).
"""

from __future__ import annotations

import json
import time

COMPARE, LAMBDA = "otsr-compare", "otsr-lambda"


def headline_metrics(objective: str, pair_name: str) -> list[str]:
    """The metrics a comparison shows: the objective first, then bias and OT-consistency (SR: PSNR and HF bias)."""
    names = [objective, "bias_sliced_w2", "ot_consistency"]
    if pair_name == "sr-folders":
        names = [objective, "psnr", "bias_frechet_hf", "bias_frechet_pool16"]
    return list(dict.fromkeys(names))


def _state(metrics: list[str], charts: bool) -> dict:
    cols = ["params.`lam`", "params.`log10_lam`", "params.`lr_map`", "params.`seed`", "tags.`role`",
            "tags.`otsr.outcome`"] + [f"metrics.`eval/{m}`" for m in metrics]
    state = {"searchFilter": "", "orderByKey": "attributes.start_time", "orderByAsc": False, "startTime": "ALL",
             "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
             "selectedColumns": cols, "columnOrder": [], "columnWidths": {}, "runsHiddenMode": "SHOWALL",
             "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "role"}]},
             "groupsExpanded": {}, "useGroupedValuesInCharts": False, "hideEmptyCharts": True,
             "isAccordionReordered": charts}
    if charts:
        section = {"uuid": "otsr-lambda", "name": "metrics against log10 λ", "display": True, "isReordered": False}
        state["compareRunSections"] = [section]
        state["compareRunCharts"] = [
            {"uuid": f"otsr-scatter-{m}", "type": "SCATTER", "runsCountToCompare": 100,
             "metricSectionId": "otsr-lambda", "deleted": False, "isGenerated": False, "displayName": f"log10 λ vs {m}",
             "xaxis": {"key": "log10_lam", "type": "PARAM"}, "yaxis": {"key": f"eval/{m}", "type": "METRIC"}}
            for m in metrics]
        state["chartsSearchFilter"] = ""
    return state


def save_views(client, experiment_id: str, objective: str, pair_name: str) -> None:
    """Write (or refresh) the experiment's two saved views."""
    metrics = headline_metrics(objective, pair_name)
    now = int(time.time() * 1000)
    for view, charts in ((COMPARE, False), (LAMBDA, True)):
        envelope = {"name": view, "createdAt": now, "updatedAt": now, "state": json.dumps(_state(metrics, charts))}
        client.set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{view}", json.dumps(envelope))


def view_urls(base: str, experiment_id: str) -> dict[str, str]:
    """The runs table opened on each saved view (MLflow's machine-learning page, not its GenAI one)."""
    root = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
    return {COMPARE: f"{root}?viewStateShareKey={COMPARE}&workflowType=machine_learning",
            LAMBDA: f"{root}?viewStateShareKey={LAMBDA}&compareRunsMode=CHART&workflowType=machine_learning"}
