"""README's main job, as a user runs it: in-process Ray, embedded MLflow (sqlite), the quick_bias space (at a
quarter of its steps and half its samples, to keep the suite short; every trial, phase and artifact of the real
job is there; at 100 steps the best GAN measured 22.0 % L2-UVP against OTS's 17.3 %)."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.sweep_tests.conftest import venv_bin
from tests.sweep_tests.helpers import assert_one_finished_run_per_trial, only_sweep

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_bias_sweep_end_to_end(tmp_path):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "HOME": str(tmp_path / "home")}
    for k in ("RAY_ADDRESS", "RAY_AUTH_MODE"):  # a new user's shell, on a machine where Ray never ran (no token)
        env.pop(k, None)
    t0 = time.perf_counter()
    out = subprocess.run([venv_bin("otsr-sweep"), "run", str(REPO / "search_spaces/quick_bias.yaml"), "--verbose", "0",
                          "--steps", "100", "--samples", "8"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    wall = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr[-3000:]
    folder = only_sweep(tmp_path / "sweeps")
    trials = assert_one_finished_run_per_trial(folder)
    report = json.loads((folder / "report.json").read_text())
    print(f"quick_bias: {len(trials)} trials in {wall:.1f}s\n" + (folder / "report.md").read_text())
    assert len(trials) == 8 + 2 + 1  # 8 GAN samples (one bundle), OTS x 2 seeds, the best GAN with seed 1
    for f in ("report.png", "report.html", "report.md"):
        assert (folder / f).stat().st_size > 500
    assert "| l2_uvp |" in out.stdout  # the table is printed
    console = out.stdout + out.stderr
    for noise in ("Token authentication", "performance bottleneck", "ExperimentalWarning"):
        assert noise not in console, noise
    row = next(r for r in report["table"] if r["metric"] == "l2_uvp")
    assert row["gan_mean"] > row["ots_mean"]  # the best-lambda GAN is still worse than OTS
    state = json.loads((folder / "state.json").read_text())
    client = MlflowClient(state["tracking_uri"])
    parent = client.get_run(json.loads((folder / "tracking_runs.json").read_text())["parent"])
    assert parent.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} >= {"report/report.png",
                                                                                    "report/report.html"}
    assert state["tracking_uri"] == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    assert parent.data.metrics["ots/l2_uvp"] == pytest.approx(row["ots_mean"])  # the report's numbers
    assert f"run_uuid={parent.info.run_id})" in parent.data.tags["mlflow.note.content"]  # shows report.png
    members = client.search_runs([state["experiment_id"]], filter_string="tags.role != 'sweep'")
    gan = [r for r in members if r.data.tags["method"] == "gan"]
    assert all("lam" in r.data.metrics and "rel_ots/l2_uvp" in r.data.metrics for r in gan)  # sorted, vs OTS
    ots = [r for r in members if r.data.tags["method"] == "ots"]
    assert [r.data.params["log10_lam"] for r in ots] == ["-4.0000"] * 2  # OTS in the λ charts, left of the GAN
    colours = {r.data.tags["role"]: set() for r in members}
    for r in members:
        colours[r.data.tags["role"]].add(r.data.tags["mlflow.runColor"])
    assert colours["ots"] == {"#111111"} and colours["best"] == {"#d62728"} and len(colours["search"]) > 4
