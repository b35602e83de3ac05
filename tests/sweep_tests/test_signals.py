"""A hostile but honest user, with real processes and signals: SIGUSR1 stops a sweep gracefully like Ctrl-C (that
a resume then finishes it without unpickling what is in the folder: test_bundled_sweeps' Ctrl-C test) and a second
driver on the same folder is refused; sweeps started together on a new MLflow store all finish; in-process Ray
listens on loopback only, and a SIGKILLed driver's Ray processes are cleaned up and its sweep resumes without losing
or duplicating trials."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweep.mlflow_sink import open_client
from sweep.tracking import get_or_create_experiment
from tests.sweep_tests.conftest import stop_process_group, tiny_space, venv_bin
from tests.sweep_tests.helpers import assert_one_finished_run_per_trial, gan_checkpoint, only_sweep, wait_for

pytestmark = pytest.mark.ray


def _driver(workdir, space, *args):
    return subprocess.Popen([venv_bin("otsr-sweep"), "run", str(space), *args], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_sigusr1_stops_gracefully_and_a_second_driver_is_refused_meanwhile(ray_cluster, workdir):
    """SIGUSR1, the signal Tune takes over while a phase runs, stops the sweep like Ctrl-C; while the first driver
    runs, a second one on the same folder exits 3 naming the lock and its holder, and disturbs nothing."""
    cluster, _ = ray_cluster
    space = tiny_space(workdir, custom="{worker: 1}", samples=2, seeds=1, steps=20000, eval_every=50)  # never ends
    driver = _driver(workdir, space, "--address", cluster.address, "--verbose", "0")
    try:
        wait_for(gan_checkpoint(workdir), driver, "a checkpoint", timeout=300)
        folder = only_sweep(workdir / "sweeps")
        second = subprocess.run([venv_bin("otsr-sweep"), "resume", str(folder), "--address", cluster.address],
                                cwd=workdir, capture_output=True, text=True, timeout=120)
        assert driver.poll() is None, "the first driver ended before the second one was tried"
        assert second.returncode == 3, second.stderr[-3000:]  # busy
        assert "driver.lock" in second.stderr and str(driver.pid) in second.stderr
        driver.send_signal(signal.SIGUSR1)
        _, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            stop_process_group(driver, signal.SIGKILL)
    assert driver.returncode == 128 + signal.SIGUSR1, err[-3000:]  # never 0: the sweep is not finished
    assert "interrupted (SIGUSR1)" in err
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
        text = space.read_text()  # one OTS trial each: the race is the store's, not the phases'
        space.write_text(text[:text.index("  gan:")] + text[text.index("  ots:"):])
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
    space = tiny_space(tmp_path, samples=2, seeds=1, steps=600, eval_every=150)
    driver = subprocess.Popen([venv_bin("otsr-sweep"), "run", str(space), "--verbose", "0"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: list(tmp_path.glob("cache/inprocess-ray/*.json")) and gan_checkpoint(tmp_path)(), driver,
                 "Ray's record and a checkpoint", timeout=300)
        time.sleep(0.5)
        pids = _tree(driver.pid)
        addrs = _listening(pids)
        assert addrs, "no listening sockets found"
        assert all(a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")) for a in addrs), addrs
        # Ray renices its workers to 15 by default: beside any other busy process the trials then got ~1/30 of a
        # core (a smoke sweep took 204-223 s beside two one-thread runs, 24 s at niceness 0)
        nice = {p: int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[16]) for p in pids
                if Path(f"/proc/{p}/stat").exists()}
        assert len(nice) > 3 and set(nice.values()) == {0}, nice
        record = json.loads(next(tmp_path.glob("cache/inprocess-ray/*.json")).read_text())
        os.kill(driver.pid, signal.SIGKILL)  # what an OOM killer does to the driver alone: no handler runs
        driver.wait()
        time.sleep(2)
        # Some of Ray's processes may outlive the driver (how many depends on timing: the raylet notices its
        # parent's death); whatever is left must be gone once the next in-process start has run.
        left = [int(p) for p in record["processes"] if Path(f"/proc/{p}").exists()]
        print(f"{len(left)} of {len(record['processes'])} Ray processes outlived the SIGKILLed driver")
        folder = only_sweep(tmp_path / "sweeps")
        assert json.loads((folder / "state.json").read_text())["phases"]["gan"]["status"] == "running"  # mid-sweep
        resumed = subprocess.run([venv_bin("otsr-sweep"), "resume", str(folder), "--verbose", "0"], cwd=tmp_path,
                                 env=env, capture_output=True, text=True, timeout=900)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert not [p for p in left if Path(f"/proc/{p}").exists() and
                    Path(f"/proc/{p}/stat").read_text().split()[2] != "Z"], "leftover Ray processes survived"
        assert not list(tmp_path.glob("cache/inprocess-ray/*.json"))  # the resumed driver ended cleanly
        trials = assert_one_finished_run_per_trial(folder)  # nothing lost or duplicated
        assert len(trials) == 2 + 1 and all(t["final"] for t in trials)
        assert any(t["metrics"]["resumed_from"] > 0 for t in trials), [
            (t["trial_id"], t["metrics"]["resumed_from"]) for t in trials]
        assert (folder / "report.html").exists()
    finally:
        if driver.poll() is None:
            stop_process_group(driver, signal.SIGKILL)
        try:  # whatever the assertions left: the driver's process group (Ray's processes live in it)
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_sigterm_right_after_ray_starts_still_stops_gracefully(ray_cluster):
    """ray.init replaces a driver's SIGTERM handler with sys.exit; the driver takes its own back as soon as Ray is up,
    so a SIGTERM (a batch scheduler's) before Tune's first step still asks for a graceful stop. A real process
    connecting to the test cluster, a real signal."""
    cluster, _ = ray_cluster
    code = f"""
import os, signal, time
from sweep import interrupts, ray_session
interrupts.install()
ray_session.start({cluster.address!r}, None, 0)
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.5)
print("stop", interrupts.STOP.is_set(), interrupts.exit_code())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, f"rc {out.returncode}: {out.stderr[-2000:]}"
    assert "stop True 143" in out.stdout
