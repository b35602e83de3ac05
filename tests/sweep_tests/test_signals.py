"""A hostile but honest user, with real processes and signals: SIGUSR1 and SIGHUP stop a sweep gracefully like
Ctrl-C (that a resume then finishes it without unpickling what is in the folder: test_reliability's Ctrl-C test);
sweeps started together on a new MLflow store all
finish; in-process Ray listens on loopback only and a SIGKILLed driver's Ray processes are cleaned up."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweep.mlflow_sink import open_client
from sweep.tracking import get_or_create_experiment
from tests.sweep_tests.conftest import stop_process_group, tiny_space, venv_bin
from tests.sweep_tests.helpers import only_sweep

pytestmark = pytest.mark.ray


def _driver(workdir, space, *args):
    return subprocess.Popen([venv_bin("otsr-sweep"), "run", str(space), *args], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _signal_after_a_checkpoint(driver, workdir, sig) -> str:
    try:
        deadline = time.time() + 300
        while not list(workdir.glob("sweeps/*/members/gan-*/checkpoint.pt")):
            assert driver.poll() is None and time.time() < deadline, "no checkpoint before the deadline"
            time.sleep(0.2)
        driver.send_signal(sig)
        _, err = driver.communicate(timeout=300)
        return err
    finally:
        if driver.poll() is None:
            stop_process_group(driver, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGHUP])
def test_sigusr1_and_sighup_stop_gracefully(ray_cluster, workdir, sig):
    cluster, _ = ray_cluster
    space = tiny_space(workdir, custom="{worker: 1}", samples=2, seeds=1, steps=300, eval_every=50)
    driver = _driver(workdir, space, "--address", cluster.address, "--verbose", "0")
    err = _signal_after_a_checkpoint(driver, workdir, sig)
    assert driver.returncode == 128 + sig, err[-3000:]  # never 0: the sweep is not finished
    folder = only_sweep(workdir / "sweeps")
    state = json.loads((folder / "state.json").read_text())
    assert state["status"] == "interrupted" and state["phases"]["gan"]["status"] == "interrupted"
    assert not (folder / "report.md").exists()
    client = MlflowClient(state["tracking_uri"])
    runs = json.loads((folder / "tracking_runs.json").read_text())
    assert client.get_run(runs["parent"]).info.status == "KILLED"


def test_sweeps_started_together_on_a_new_store_all_finish(ray_cluster, workdir):
    """The first use of an sqlite store migrates its schema; three drivers racing there once broke the store for
    good (every later sweep exited 1): all three finish, and the store then takes a new experiment, run and metric
    through the same calls a sweep makes."""
    cluster, _ = ray_cluster
    drivers = []
    for i in range(3):
        d = workdir / f"s{i}"
        d.mkdir()
        space = tiny_space(d, custom="{worker: 1}", samples=1, seeds=1, steps=20, eval_every=10)
        drivers.append(subprocess.Popen([venv_bin("otsr-sweep"), "run", str(space), "--address", cluster.address,
                                         "--verbose", "0", "--storage", str(d / "sweeps")], cwd=workdir,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in drivers:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    uri = f"sqlite:///{workdir / 'mlflow.db'}"  # the store still works for whoever opens it next, as a sweep does
    exp = get_or_create_experiment(uri, "otsr/later", None)
    client = open_client(uri)
    later = client.create_run(exp)
    client.log_metric(later.info.run_id, "eval/l2_uvp", 1.5, step=10)
    client.set_terminated(later.info.run_id)
    assert client.get_run(later.info.run_id).data.metrics == {"eval/l2_uvp": 1.5}
    runs = client.search_runs([client.get_experiment_by_name("otsr/tiny").experiment_id])
    assert len([r for r in runs if r.data.tags.get("otsr.kind") == "sweep"]) == 3


def _tree(pid: int) -> list[int]:
    from sweep.ray_session import _children

    return [pid, *_children(pid)]


def _listening(pids: list[int]) -> list[str]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    addrs = []
    for line in out.splitlines():
        if any(f"pid={p}," in line for p in pids):
            addrs.append(line.split()[3])
    return addrs


@pytest.mark.slow
def test_in_process_ray_listens_on_loopback_and_a_killed_drivers_processes_are_cleaned(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    env["OTSR_CACHE"] = str(tmp_path / "cache")
    space = tiny_space(tmp_path, samples=2, seeds=1, steps=1000, eval_every=250)
    driver = subprocess.Popen([venv_bin("otsr-sweep"), "run", str(space), "--verbose", "0"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not list(tmp_path.glob("cache/inprocess-ray/*.json")) or not list(tmp_path.glob("sweeps/*/members")):
            assert driver.poll() is None and time.time() < deadline
            time.sleep(0.5)
        time.sleep(3)
        pids = _tree(driver.pid)
        addrs = _listening(pids)
        assert addrs, "no listening sockets found"
        assert all(a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")) for a in addrs), addrs
        record = json.loads(next(tmp_path.glob("cache/inprocess-ray/*.json")).read_text())
        os.kill(driver.pid, signal.SIGKILL)  # what an OOM killer does to the driver alone: no handler runs
        driver.wait()
        time.sleep(2)
        # Some of Ray's processes may outlive the driver (how many depends on timing: the raylet notices its
        # parent's death); whatever is left must be gone once the next in-process start has run.
        left = [int(p) for p in record["processes"] if Path(f"/proc/{p}").exists()]
        print(f"{len(left)} of {len(record['processes'])} Ray processes outlived the SIGKILLed driver")
        folder = only_sweep(tmp_path / "sweeps")
        resumed = subprocess.run([venv_bin("otsr-sweep"), "resume", str(folder), "--verbose", "0"], cwd=tmp_path,
                                 env=env, capture_output=True, text=True, timeout=900)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert not [p for p in left if Path(f"/proc/{p}").exists() and
                    Path(f"/proc/{p}/stat").read_text().split()[2] != "Z"], "leftover Ray processes survived"
        assert not list(tmp_path.glob("cache/inprocess-ray/*.json"))  # the resumed driver ended cleanly
    finally:
        if driver.poll() is None:
            stop_process_group(driver, signal.SIGKILL)
        try:  # whatever the assertions left: the driver's process group (Ray's processes live in it)
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
