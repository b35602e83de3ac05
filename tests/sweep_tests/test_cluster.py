"""Sweeps on a real multi-node Ray cluster on 127.0.0.1: a killed worker node, diverged trials,
the SR demo's space (placement on the worker node and an HTTP MLflow server: test_bundled_sweeps)."""

import json
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from sweep.phases import Options
from sweep.runner import create_sweep, run_sweep
from tests.sweep_tests.conftest import tiny_space
from tests.sweep_tests.helpers import assert_one_finished_run_per_trial

pytestmark = pytest.mark.ray


def _first_checkpoint(folder, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if list(folder.glob("members/*/checkpoint.pt")):
            return
        time.sleep(0.2)
    raise TimeoutError("no trial checkpointed")


def test_killed_worker_node_retries_trials_from_checkpoints(ray_cluster, workdir):
    cluster, _ = ray_cluster
    victim = cluster.add_node(num_cpus=1, resources={"victim": 1})
    cluster.wait_for_nodes()
    opts = Options(address=cluster.address, tracking_uri=None, verbose=0)
    folder = create_sweep(tiny_space(workdir, custom="{victim: 1}", samples=1, seeds=1, steps=1500,
                                     eval_every=200), opts)
    errors = []
    driver = threading.Thread(target=lambda: _catch(errors, run_sweep, folder, opts))
    driver.start()
    _first_checkpoint(folder)
    rescue = cluster.add_node(num_cpus=1, resources={"victim": 1})
    cluster.remove_node(victim)  # kills the raylet and the trial running on it
    driver.join(timeout=300)
    assert not driver.is_alive() and not errors, errors
    trials = assert_one_finished_run_per_trial(folder)
    assert len(trials) == 2 and all(t["final"] for t in trials)  # no trial lost
    moved = [t for t in trials if t["metrics"]["resumed_from"] > 0]
    assert moved, "no trial was resumed from a checkpoint"
    assert all(t["metrics"]["node_id"] == rescue.node_id for t in moved)
    cluster.remove_node(rescue)


def _catch(errors, fn, *args):
    try:
        fn(*args)
    except Exception as e:  # surfaced by the assertion in the test thread
        errors.append(repr(e))


def test_diverged_trials_end_failed_with_the_reason(ray_cluster, workdir):
    cluster, _ = ray_cluster
    space = tiny_space(workdir, custom="{worker: 1}", samples=2, seeds=2)
    space.write_text(space.read_text().replace("critic_steps: 2, lr_map: 1.0e-3, lr_critic: 1.0e-3",
                                               "critic_steps: 2, lr_map: 1.0e+30, lr_critic: 1.0e+30"))
    opts = Options(address=cluster.address, verbose=0)
    folder = create_sweep(space, opts)
    report = run_sweep(folder, opts)  # the sweep survives: OTS trials and the report are intact
    trials = assert_one_finished_run_per_trial(folder)
    gan = [t for t in trials if t["method"] == "gan"]
    assert len(gan) == 2 and all(t["diverged"] for t in gan)
    assert report["counts"]["diverged"] == 2 and report["ots_seeds"] == 2
    state = json.loads((folder / "state.json").read_text())
    assert state["phases"]["gan-best"]["status"] == "skipped"
    client = MlflowClient(state["tracking_uri"])
    for t in gan:
        run = client.search_runs([state["experiment_id"]], filter_string=f"tags.`otsr.member` = '{t['trial_id']}'")[0]
        assert run.info.status == "FAILED"
        assert run.data.tags["otsr.reason"].startswith("diverged at step ")


@pytest.mark.slow
def test_sr_demo_sweep_logs_sr_metrics_and_grids(ray_cluster, workdir, monkeypatch, tmp_path_factory):
    from pathlib import Path

    cluster, _ = ray_cluster
    monkeypatch.setenv("OTSR_DATA", str(tmp_path_factory.mktemp("otsr-data")))
    opts = Options(address=cluster.address, verbose=0, overrides={"samples": 1, "steps": 3, "seeds": 1})
    space = Path(__file__).resolve().parents[2] / "search_spaces" / "sr_demo.yaml"
    folder = create_sweep(space, opts)
    report = run_sweep(folder, opts)
    trials = assert_one_finished_run_per_trial(folder)
    assert len(trials) == 2 and all(t["final"] for t in trials)
    state = json.loads((folder / "state.json").read_text())
    client = MlflowClient(state["tracking_uri"])
    for t in trials:
        run = client.search_runs([state["experiment_id"]], filter_string=f"tags.`otsr.member` = '{t['trial_id']}'")[0]
        assert {"eval/psnr", "eval/ssim", "eval/psnr_bicubic", "eval/bias_frechet_pool16"} <= set(run.data.metrics)
        assert "run/map.png" in {a.path for a in client.list_artifacts(run.info.run_id, "run")}
    assert {r["metric"] for r in report["table"]} >= {"transport_cost"}
