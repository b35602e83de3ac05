"""One declared comparison: methods declare their role (swept along a knob, or reference), pairs declare their
headline metrics, and the report, the MLflow views, tracking, ``otsr train`` and the benchmarks all read those
declarations. A third method declared in one place appears everywhere a comparison is shown."""

from __future__ import annotations

import json
import math

import pytest

from otsr.bench import quality
from otsr.cli import _headline, main
from otsr.evaluation import metric_names
from otsr.methods import METHODS, OTS, Method, register_method
from otsr.pairs import make_pair, pair_names
from sweep.mlflow_views import headline_metrics, view_tags
from sweep.report import _panels, explain, summarise, sweep_headline, write_report
from sweep.tracking import member_run_name, run_params

FAST = ["--steps", "20", "--eval-every", "10", "--batch-size", "32", "--width", "16", "--critic-width", "16",
        "--device", "cpu"]


class Annealed(Method):
    """A third method, declared here only: OTS's game, swept along the map's learning rate."""

    name = "annealed"
    summary = "a test method swept along lr_map"
    losses = ("potential", "map")
    critic_is_potential = True
    swept, swept_symbol = "lr_map", "η"

    def step(self, s):
        """OTS's step."""
        return OTS.step(self, s)


@pytest.fixture
def third_method():
    register_method(Annealed())
    try:
        yield METHODS["annealed"]
    finally:
        METHODS.pop("annealed")


def _member(phase, settings, status="completed", **metrics):
    return {"phase": phase, "settings": settings, "role": phase, "optuna": None, "status": status, "step": 40,
            "metrics": metrics, "objective": {}, "logged_eval": 40, "logged_train": 40, "reason": ""}


def fake_sweep(folder, methods, pair=None, headline=True):
    """A finished sweep folder as the runner leaves it (state.json and resolved.json), without running one."""
    pair = pair or {"name": "gaussian-shift", "params": {"dim": 4, "shift": 2.0}}
    folder.mkdir(parents=True)
    cfg = {"cost": "mean", "gp": 10.0, "lam": 0.0, "lr_map": 1e-3, "seed": 0}
    resolved = {"name": "t", "pair": pair, "objectives": [{"metric": "l2_uvp", "mode": "min"}], "steps": 40,
                "seeds": 2, "scheduler": {"type": "fifo"}, "baselines": {},
                "methods": {m: {"config": {**cfg, "method": m}, "searched": searched, "bundle": 1}
                            for m, searched in methods.items()}}
    if headline:
        resolved["headline"] = make_pair(pair["name"], **pair["params"]).headline().to_dict()
    members, best = {}, {}
    for m, searched in methods.items():
        if searched:
            knob = searched[0]
            for i, v in enumerate((0.01, 0.1, 1.0)):
                members[f"{m}-{i:03d}"] = _member(m, {knob: v, "seed": 0}, l2_uvp=10.0 + i,
                                                  bias_mean_shift=0.5 - 0.2 * i, bias_sliced_w2=0.3,
                                                  ot_consistency=0.5)
            best[m] = {knob: 0.01}
            members[f"{m}-best-000"] = _member(f"{m}-best", {knob: 0.01, "seed": 1}, l2_uvp=10.5,
                                               bias_mean_shift=0.45, bias_sliced_w2=0.3, ot_consistency=0.5)
        else:
            for s in (0, 1):
                members[f"{m}-{s:03d}"] = _member(m, {"seed": s}, l2_uvp=2.0 + s, bias_mean_shift=0.2,
                                                  bias_sliced_w2=0.1, ot_consistency=1.0)
    state = {"tracking_uri": "sqlite:///x.db", "experiment_id": "1", "phases": {}, "best": best, "overrides": {},
             "members": members, "status": "finished"}
    (folder / "state.json").write_text(json.dumps(state))
    (folder / "resolved.json").write_text(json.dumps(resolved))
    return folder


def test_roles_are_declared_by_the_methods():
    assert METHODS["gan"].swept == "lam" and not METHODS["gan"].reference
    assert METHODS["ots"].reference and METHODS["ots"].swept is None


def test_report_compares_swept_methods_against_references(tmp_path):
    summary = summarise(fake_sweep(tmp_path / "s", {"gan": ["lam"], "ots": []}))
    assert [m["name"] for m in summary["methods"]] == ["gan", "ots"]
    row = next(r for r in summary["table"] if r["metric"] == "l2_uvp")
    assert row["gan_mean"] == pytest.approx(10.25) and row["ots_mean"] == pytest.approx(2.5)
    assert summary["ots_seeds"] == 2 and summary["gan_seeds"] == 2 and summary["best"] == {"gan": {"lam": 0.01}}
    # lam=1 is less biased than OTS (mean shift 0.1 < 0.2) but farther from the OT map: the paper's point
    assert [t["knob"] for t in summary["less_biased_not_ot"]] == [1.0]
    assert summary["headline"]["best_gan_l2_uvp"] == pytest.approx(10.25)
    assert explain(summary)[0].endswith("other seeds: l2_uvp 10 with seed 0 (the search's), 10.5 with seed 1.")


def test_a_third_method_appears_in_the_report_the_views_and_tracking(tmp_path, third_method):
    folder = fake_sweep(tmp_path / "s", {"gan": ["lam"], "ots": [], "annealed": ["lr_map"]})
    summary = write_report(folder)
    assert [m["name"] for m in summary["methods"]] == ["gan", "annealed", "ots"]
    text = (folder / "report.md").read_text()
    assert "ANNEALED (best: η=0.01), n=2" in text and "GAN (best: λ=0.01), n=2" in text
    assert "annealed_mean" in summary["table"][0] and (folder / "report.png").stat().st_size > 500
    assert any(t["method"] == "annealed" and t["knob"] == 0.1 for t in summary["trials"])
    assert "ANNEALED η=1" in " ".join(t["label"] for t in summary["less_biased_not_ot"])
    tags = view_tags("l2_uvp", sweep_headline(json.loads((folder / "resolved.json").read_text())),
                     ["gan", "ots", "annealed"])
    columns = json.loads(json.loads(tags["mlflow.sharedViewState.otsr-compare"])["state"])["selectedColumns"]
    assert {"metrics.`lam`", "metrics.`lr_map`", "metrics.`rel_ots/l2_uvp`"} <= set(columns)
    charts = json.loads(json.loads(tags["mlflow.sharedViewState.otsr-lambda"])["state"])["compareRunCharts"]
    assert {c["xaxis"]["key"] for c in charts} == {"log10_lam", "log10_lr_map"}
    assert {c["yaxis"]["key"] for c in charts if c["xaxis"]["key"] == "log10_lr_map"} >= {"rel_ots/l2_uvp"}
    params = run_params({"method": "annealed", "lr_map": 1e-3, "seed": 0}, {"name": "gaussian-shift", "params": {}})
    assert params["log10_lr_map"] == "-3.0000" and "log10_lam" not in params
    assert member_run_name({"method": "annealed", "lr_map": 1e-3, "seed": 1}, ["lr_map"]) == "annealed η=0.001 s1"
    assert run_params({"method": "ots", "lam": 0.0}, {"name": "x"}).keys() == {"method", "lam", "pair.name"}


@pytest.mark.parametrize("name", [n for n in pair_names() if n != "sr-folders"] + ["sr-folders"])
def test_every_view_names_the_same_headline_metric(name, tmp_path):
    """The report's panels, the MLflow views, otsr train's summary and the quality bench name the pair's headline
    bias, and evaluation computes it at every evaluation."""
    params = {"hr_crop": 32, "workers": 0} if name == "sr-folders" else {}
    if name == "sr-folders":
        pytest.importorskip("skimage")
    pair = make_pair(name, **params)
    head = pair.headline()
    assert head.bias in metric_names(pair, full=False)
    assert head.accuracy is None or head.accuracy in metric_names(pair, full=False)
    folder = fake_sweep(tmp_path / "s", {"gan": ["lam"], "ots": []}, pair=pair.spec().to_dict(), headline=False)
    summary = summarise(folder)  # a folder without a stored headline: built from the pair, as before the change
    assert _panels(summary)[0][0] == head.bias
    assert head.bias in headline_metrics("transport_cost", head)
    values = dict.fromkeys(metric_names(pair), 1.0)
    assert head.bias in _headline(values, head.names())
    assert head.bias in quality.bench_metrics(pair) and head.bias in quality.curve_keys(pair)


def test_headline_bias_of_the_shipped_pairs():
    assert make_pair("gaussian-shift").headline().bias == "bias_mean_shift"  # the closed form's bias
    assert make_pair("convex-mixture").headline().bias == "bias_sliced_w2"
    assert make_pair("degraded-images").headline().bias == "bias_frechet_hf"


def test_otsr_train_prints_the_headline_metrics(tmp_path, capsys):
    assert main(["train", "--pair", "gaussian-shift", "--dim", "2", "--method", "gan", "--lam", "1", *FAST,
                 "--out", str(tmp_path / "run")]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("completed"))
    assert "bias_mean_shift" in line and "l2_uvp" in line
    assert not math.isnan(json.loads((tmp_path / "run" / "metrics.json").read_text())["bias_mean_shift"])
