"""What a finished sweep shows in MLflow, on a real store (sqlite, through the tracking queue): the swept runs
relative to the reference (OTS) in the λ charts, the sweep run's report numbers as metrics and a description that
shows report.png, and the comparison view's columns, filter and λ order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweep.folder import SweepState
from sweep.mlflow_sink import open_client
from sweep.mlflow_views import view_tags
from sweep.phases import Options
from sweep.report import sweep_headline, write_report
from sweep.runner import _finish
from sweep.tracking import ROLE_TAG, Tracker, knob_metrics, member_run_name, run_params
from tests.sweep_tests.test_comparison import fake_sweep

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
REFERENCE_X = {"lam": -3.0}  # OTS one decade left of the fake sweep's lowest λ (0.01)


@pytest.fixture
def finished(tmp_path):
    """A fake finished sweep (GAN λ search, its best rerun, OTS x 2) whose runs exist in a real sqlite store, as the
    recorder leaves them, then the runner's finish (report, parent metrics, note, relative metrics)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = open_client(uri).create_experiment("otsr/t", artifact_location=(tmp_path / "art").as_uri())
    folder = fake_sweep(tmp_path / "s", {"gan": ["lam"], "ots": []})
    state = json.loads((folder / "state.json").read_text())
    state.update(tracking_uri=uri, experiment_id=exp)
    state["members"]["gan-000"]["role"] = "best"
    (folder / "state.json").write_text(json.dumps(state))
    spec = json.loads((folder / "resolved.json").read_text())
    tracker = Tracker(uri, folder, exp)
    tracker.set_experiment_tags(view_tags("l2_uvp", sweep_headline(spec), ["gan", "ots"], REFERENCE_X))
    tracker.create_run("parent", folder.name, {ROLE_TAG: "sweep"})
    for key in reversed(sorted(state["members"])):  # created out of λ order
        m = state["members"][key]
        settings = {**spec["methods"][m["phase"].split("-")[0]]["config"], **m["settings"]}
        tracker.create_run(key, member_run_name(settings, ["lam"]), {ROLE_TAG: m["role"], "seed": settings["seed"],
                                                                     "otsr.member": key},
                           run_params(settings, spec["pair"], REFERENCE_X), parent="parent")
        tracker.log_metrics(key, knob_metrics(settings), 0)
        tracker.log_metrics(key, {f"eval/{k}": v for k, v in m["metrics"].items()}, 40)
    assert tracker.flush(force=True)
    report = write_report(folder)
    _finish(folder, SweepState.load(folder), tracker, report, Options(verbose=0))
    client = MlflowClient(uri)
    runs = {r.data.tags.get("otsr.member", "parent"): r for r in client.search_runs([exp])}
    return folder, client, exp, runs


def test_swept_runs_are_plotted_relative_to_the_reference(finished):
    _, client, exp, runs = finished
    ots_mean = (2.0 + 3.0) / 2
    for key, run in runs.items():
        if key.startswith("gan"):
            assert run.data.metrics["rel_ots/l2_uvp"] == pytest.approx(run.data.metrics["eval/l2_uvp"] / ots_mean)
    own = [runs[k].data.metrics["rel_ots/l2_uvp"] for k in ("ots-000", "ots-001")]
    assert own == pytest.approx([0.8, 1.2])  # the reference's own spread around 1
    view = client.get_experiment(exp).tags["mlflow.sharedViewState.otsr-lambda"]
    charts = json.loads(json.loads(view)["state"])["compareRunCharts"]
    rel = [c for c in charts if c["yaxis"]["key"].startswith("rel_ots/")]
    assert rel and charts[:len(rel)] == rel  # the relative charts come first
    assert {c["yaxis"]["key"] for c in rel} == {"rel_ots/l2_uvp", "rel_ots/bias_mean_shift", "rel_ots/ot_consistency"}
    assert all(c["xaxis"] == {"key": "log10_lam", "type": "PARAM"} for c in charts)
    plotted = {k for k, r in runs.items() if "log10_lam" in r.data.params and "rel_ots/l2_uvp" in r.data.metrics}
    assert plotted == set(runs) - {"parent"}  # OTS stands in the λ charts too, left of the GAN's curve
    assert {runs[k].data.params["log10_lam"] for k in ("ots-000", "ots-001")} == {"-3.0000"}
    assert min(float(runs[k].data.params["log10_lam"]) for k in runs if k.startswith("gan")) == pytest.approx(-2)
    sections = json.loads(json.loads(view)["state"])["compareRunSections"]
    assert [s["name"] for s in sections] == ["÷ OTS mean vs log10 λ (OTS at -3)", "metrics vs log10 λ (OTS at -3)"]


def test_reference_runs_stand_a_decade_left_of_the_searched_range():
    from sweep.space import load_space, parse_space
    from sweep.tracking import reference_positions
    spec = load_space(SPACES / "quick_bias.yaml")  # λ searched from 1e-3
    assert reference_positions(spec) == {"lam": -4.0}
    raw = dict(spec.raw)
    raw["methods"] = {**raw["methods"], "gan": {**raw["methods"]["gan"],
                                                 "search": {"lam": {"type": "grid", "values": [0.5, 30.0]}}}}
    assert reference_positions(parse_space(raw)) == {"lam": -2.0}  # floor(log10 0.5) - 1
    params = run_params({"method": "ots", "seed": 0}, {"name": "x"}, {"lam": -4.0})
    assert params["log10_lam"] == "-4.0000"
    assert "log10_lam" not in run_params({"method": "ots", "seed": 0}, {"name": "x"})
    assert run_params({"method": "gan", "lam": 0.1}, {"name": "x"}, {"lam": -4.0})["log10_lam"] == "-1.0000"


def test_runs_are_coloured_by_role_and_the_search_by_lambda():
    from sweep.space import load_space
    from sweep.tracking import BEST_COLOR, REFERENCE_COLOR, knob_ranges, run_color
    ranges = knob_ranges(load_space(SPACES / "quick_bias.yaml"))
    assert ranges == {"lam": (1e-3, 100.0)}
    shades = [run_color({"method": "gan", "lam": v}, "search", ranges) for v in (1e-3, 1e-1, 100.0, 1e4)]
    assert shades[0] == "#9ecae1" and shades[2] == shades[3] == "#08306b"  # light to dark blue, clipped
    assert len(set(shades[:3])) == 3
    assert run_color({"method": "gan", "lam": 1.0}, "best", ranges) == BEST_COLOR
    assert run_color({"method": "ots"}, "ots", ranges) == REFERENCE_COLOR


def test_the_sweep_run_shows_the_report(finished):
    folder, client, _, runs = finished
    parent = runs["parent"]
    report = json.loads((folder / "report.json").read_text())
    row = next(r for r in report["table"] if r["metric"] == "l2_uvp")
    assert parent.data.metrics["gan_best/l2_uvp"] == pytest.approx(row["gan_mean"])
    assert parent.data.metrics["ots/l2_uvp"] == pytest.approx(row["ots_mean"])
    assert parent.data.metrics["rel_ots/gan_best_l2_uvp"] == pytest.approx(row["gan_mean"] / row["ots_mean"])
    note = parent.data.tags["mlflow.note.content"]
    image = f"get-artifact?path=report%2Freport.png&run_uuid={parent.info.run_id}"
    assert f"![report.png]({image})" in note and "{run_id}" not in note
    assert "report/report.png" in {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    lines = [ln for ln in note.splitlines() if ln.startswith("| gan")]
    assert [ln.split(" | ")[1] for ln in lines] == ["0.01", "0.01", "0.1", "1"]  # by λ
    assert "10.25 ± 0.35" in note and "| gan λ=0.01 s0 ★ |" in note  # rounded; the chosen run marked


def test_the_compare_view_opens_on_the_headline_by_lambda(finished):
    _, client, exp, runs = finished
    state = json.loads(json.loads(client.get_experiment(exp).tags["mlflow.sharedViewState.otsr-compare"])["state"])
    cols = state["selectedColumns"]
    assert cols[:5] == ["metrics.`eval/l2_uvp`", "metrics.`eval/bias_mean_shift`", "metrics.`eval/ot_consistency`",
                        "tags.`role`", "tags.`otsr.outcome`"]
    assert state["columnOrder"] == cols and "params.`seed`" not in cols and "tags.`seed`" in cols  # no seed mean
    assert state["columnWidths"]["metrics.`eval/bias_mean_shift`"] >= 8 * len("eval/bias_mean_shift")
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`lam`", True)
    shown = client.search_runs([exp], filter_string=state["searchFilter"],
                               order_by=[state["orderByKey"].replace("`", "") + " ASC"])
    assert "parent" not in {r.data.tags.get("otsr.member", "parent") for r in shown}  # no group of the sweep run
    search = [r.data.metrics["lam"] for r in shown if r.data.tags[ROLE_TAG] != "ots"]
    assert search == sorted(search) and len(search) == 4
    assert "lam" not in runs["ots-000"].data.metrics
