"""Faults a sweep must survive with real processes: Ctrl-C (a real SIGINT to the driver; the resume that finishes
it must not unpickle what is in the sweep folder), an MLflow server
killed mid-trial, and a second driver on the same sweep folder."""

import json
import signal
import subprocess
import time

import pytest
from mlflow.tracking import MlflowClient

from sweep.lock import is_locked
from tests.sweep_tests.conftest import start_mlflow_server, stop_process_group, tiny_space, venv_bin
from tests.sweep_tests.helpers import assert_one_finished_run_per_trial, only_sweep, plant_pickles

pytestmark = pytest.mark.ray


def _start_driver(workdir, space, *args):
    return subprocess.Popen([venv_bin("otsr-sweep"), "run", str(space), *args], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(cond, proc, what: str, timeout: float = 180):
    deadline = time.time() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"driver ended (rc {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_ctrl_c_stops_gracefully_and_resume_finishes_every_trial(ray_cluster, workdir):
    cluster, _ = ray_cluster
    common = ["--address", cluster.address]
    space = tiny_space(workdir, custom="{worker: 1}", samples=3, seeds=1, steps=250, eval_every=50)
    driver = _start_driver(workdir, space, *common)
    try:
        _wait_for(lambda: list(workdir.glob("sweeps/*/members/gan-*/checkpoint.pt")), driver, "a checkpoint")
        driver.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, err = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            stop_process_group(driver, signal.SIGKILL)
    assert driver.returncode == 130, err[-3000:]
    assert "interrupted" in err and "otsr-sweep resume" in err
    assert "finished" not in out.lower().split("mlflow runs")[0].split("trial")[0]  # never claims success
    folder = only_sweep(workdir / "sweeps")
    state = json.loads((folder / "state.json").read_text())
    assert state["status"] == "interrupted" and state["phases"]["gan"]["status"] == "interrupted"
    parent = json.loads((folder / "tracking_runs.json").read_text())["parent"]
    client = MlflowClient(state["tracking_uri"])
    assert client.get_run(parent).info.status == "KILLED"
    assert not is_locked(folder)

    marker = workdir / "pwned"
    plant_pickles(folder, marker)
    resumed = subprocess.run([venv_bin("otsr-sweep"), "resume", str(folder), *common, "--verbose", "0"],
                             cwd=workdir, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not marker.exists(), "resume unpickled a file from the sweep folder"
    trials = assert_one_finished_run_per_trial(folder)
    assert len(trials) == 3 + 1 and all(t["final"] for t in trials)
    assert client.get_run(parent).info.status == "FINISHED"
    assert json.loads((folder / "state.json").read_text())["status"] == "finished"


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

        _wait_for(a_trial_run_exists, driver, "the first trial's MLflow run")
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


def test_a_second_driver_on_the_same_folder_is_refused(ray_cluster, workdir):
    cluster, _ = ray_cluster
    space = tiny_space(workdir, custom="{worker: 1}", samples=2, seeds=1, steps=300, eval_every=100)
    driver = _start_driver(workdir, space, "--address", cluster.address, "--verbose", "0")
    try:
        _wait_for(lambda: list(workdir.glob("sweeps/*/driver.pid")), driver, "the driver lock")
        folder = only_sweep(workdir / "sweeps")
        second = subprocess.run([venv_bin("otsr-sweep"), "resume", str(folder), "--address", cluster.address],
                                cwd=workdir, capture_output=True, text=True, timeout=120)
        assert second.returncode == 3  # busy
        assert "driver.lock" in second.stderr and str(driver.pid) in second.stderr
        driver.communicate(timeout=400)
    finally:
        if driver.poll() is None:
            stop_process_group(driver, signal.SIGKILL)
    assert driver.returncode == 0
    assert len(assert_one_finished_run_per_trial(folder)) == 3


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
