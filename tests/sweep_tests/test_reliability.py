"""Faults a sweep must survive with real processes: an MLflow server killed mid-trial, a trial given a GPU without
CUDA. (Ctrl-C and the resume that must not unpickle the folder: test_bundled_sweeps; a second driver on the same
folder: test_signals.)"""

import json
import signal
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from tests.sweep_tests.conftest import start_mlflow_server, stop_process_group, tiny_space, venv_bin
from tests.sweep_tests.helpers import assert_one_finished_run_per_trial, only_sweep, wait_for

pytestmark = pytest.mark.ray


def _start_driver(workdir, space, *args):
    return subprocess.Popen([venv_bin("otsr-sweep"), "run", str(space), *args], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_mlflow_killed_mid_trial_loses_nothing(ray_cluster, workdir):
    cluster, _ = ray_cluster
    server, uri = start_mlflow_server(workdir / "server")
    port = int(uri.rsplit(":", 1)[1])
    space = tiny_space(workdir, custom="{worker: 1}", samples=2, seeds=1, steps=200, eval_every=40)
    driver = _start_driver(workdir, space, "--address", cluster.address, "--tracking-uri", uri, "--verbose", "0")
    try:
        def a_trial_run_exists():
            f = list(workdir.glob("sweeps/*/tracking_runs.json"))
            return f and len(json.loads(f[0].read_text())) >= 2  # the parent and one trial

        wait_for(a_trial_run_exists, driver, "the first trial's MLflow run")
        stop_process_group(server, signal.SIGKILL)  # the tracking server dies while trials train
        out, err = driver.communicate(timeout=400)
    finally:
        if driver.poll() is None:
            stop_process_group(driver, signal.SIGKILL)
        stop_process_group(server, signal.SIGKILL)
    assert driver.returncode == 0, err[-3000:]  # the sweep itself finished
    assert "tracking_queue.jsonl" in out  # and says which writes wait
    folder = only_sweep(workdir / "sweeps")
    queue = (folder / "tracking_queue.jsonl").read_text().strip().splitlines()
    assert queue, "nothing was queued while the server was down"
    members = json.loads((folder / "state.json").read_text())["members"]
    assert [m["status"] for m in members.values()] == ["completed"] * 3  # training went on without the server

    server, uri2 = start_mlflow_server(workdir / "server", port=port)  # back, same store
    try:
        assert uri2 == uri
        resumed = subprocess.run([venv_bin("otsr-sweep"), "resume", str(folder), "--address", cluster.address,
                                  "--verbose", "0"], cwd=workdir, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "View run" not in resumed.stdout  # MLflow's own line per ended run, even at --verbose 0
        q = folder / "tracking_queue.jsonl"
        assert not q.exists() or not q.read_text().strip()  # every queued write was delivered
        trials = assert_one_finished_run_per_trial(folder)
        assert len(trials) == 3
        client = MlflowClient(uri)
        for t in trials:  # every evaluation reached MLflow, with real timestamps
            run = client.search_runs([json.loads((folder / "state.json").read_text())["experiment_id"]],
                                     filter_string=f"tags.`otsr.member` = '{t['trial_id']}'")[0]
            hist = client.get_metric_history(run.info.run_id, "eval/l2_uvp")
            assert sorted(m.step for m in hist) == [40, 80, 120, 160, 200]
            assert all(m.timestamp > 1_600_000_000_000 for m in hist)
    finally:
        stop_process_group(server)


def test_a_trial_given_a_gpu_without_cuda_fails_with_that_reason(ray_cluster, workdir):
    """Ray hands out the worker's declared GPU, but CUDA is unavailable: the trial must not train on CPU."""
    from sweep.phases import Options
    from sweep.runner import create_sweep, run_sweep

    cluster, _ = ray_cluster
    space = tiny_space(workdir, custom="{worker: 1}", samples=1, seeds=1, steps=20, eval_every=10)
    text = space.read_text().replace("gpu: 0,", "gpu: 0.5, max_failures: 0,")
    space.write_text(text[:text.index("  gan:")] + text[text.index("  ots:"):])  # one OTS trial is enough
    opts = Options(address=cluster.address, verbose=0)
    folder = create_sweep(space, opts)
    run_sweep(folder, opts)
    state = json.loads((folder / "state.json").read_text())
    runs = MlflowClient(state["tracking_uri"]).search_runs([state["experiment_id"]],
                                                           filter_string="tags.`otsr.member` != ''")
    assert len(runs) == 1
    for run in runs:
        assert run.info.status == "FAILED"
        assert "asked for a GPU" in run.data.tags["otsr.reason"] and "CUDA" in run.data.tags["otsr.reason"]
