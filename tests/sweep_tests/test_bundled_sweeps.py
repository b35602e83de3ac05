"""Sweeps whose methods train bundles: each member is its own Optuna trial, MLflow run (on a tracking server, from
the worker node) and console line; ASHA
stops members one by one; a bundled sweep stopped by Ctrl-C resumes every member with no duplicate metric points."""

import json
import signal
import subprocess

import optuna
import pytest
from mlflow.tracking import MlflowClient

from sweep.lock import is_locked
from sweep.phases import Options
from sweep.runner import create_sweep, run_sweep
from tests.sweep_tests.conftest import stop_process_group, tiny_space, venv_bin
from tests.sweep_tests.helpers import (
    assert_one_finished_run_per_trial,
    gan_checkpoint,
    only_sweep,
    plant_pickles,
    trial_runs,
    wait_for,
)

pytestmark = pytest.mark.ray


def bundled_space(workdir, samples=6, bundle=3, steps=80, eval_every=20, scheduler="asha"):
    space = tiny_space(workdir, custom="{worker: 1}", samples=samples, seeds=2, steps=steps, eval_every=eval_every)
    text = space.read_text().replace("scheduler: {type: fifo}",
                                     f"scheduler: {{type: {scheduler}, grace_period: {eval_every}, "
                                     "reduction_factor: 2}")
    text = text.replace(f"    samples: {samples}\n", f"    samples: {samples}\n    bundle: {bundle}\n")
    text = text.replace("  ots:\n", "  ots:\n    bundle: 2\n")
    space.write_text(text)
    return space


def test_bundled_search_on_the_worker_node_gives_each_member_its_trial_line_and_run_over_http(
        ray_cluster, mlflow_server, workdir):
    cluster, worker = ray_cluster
    space = bundled_space(workdir)
    out = subprocess.run([venv_bin("otsr-sweep"), "run", str(space), "--address", cluster.address,
                          "--tracking-uri", mlflow_server], cwd=workdir, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    folder = only_sweep(workdir / "sweeps")
    members = assert_one_finished_run_per_trial(folder)
    assert {m["metrics"]["node_id"] for m in members} == {worker.node_id}  # the space asks for the worker node
    gan = [m for m in members if m["phase"] == "gan"]
    assert len(gan) == 6  # samples counts configurations, not bundles
    assert len(members) == 6 + 1 + 2
    state = json.loads((folder / "state.json").read_text())
    assert [len(b) for b in state["phases"]["gan"]["bundles"].values()] == [3, 3]
    assert [len(b) for b in state["phases"]["ots"]["bundles"].values()] == [2]
    assert out.stdout.count("  [gan ") == 6 and out.stdout.count("  [ots ") == 2  # one line per member
    stopped = [m for m in gan if m["status"] == "stopped"]
    assert stopped, "ASHA stopped no member"
    assert all(m["status"] in ("completed", "stopped") for m in gan)
    _, runs = trial_runs(folder)
    for m in stopped:  # visibly different in MLflow: KILLED, a name suffix, an outcome tag
        run = runs[m["trial_id"]][0]
        assert run.info.status == "KILLED" and "(stopped @" in run.info.run_name
        assert run.data.tags["otsr.outcome"] == "stopped_early"
    study = optuna.load_study(study_name=f"{folder.name}/gan", storage=f"sqlite:///{folder / 'optuna.db'}")
    assert len(study.trials) == 6 and study.metric_names == ["l2_uvp"]
    by_number = {t.number: t for t in study.trials}
    for key, rec in state["members"].items():
        if rec["phase"] != "gan":
            continue
        trial = by_number[rec["optuna"]]
        want = {"completed": optuna.trial.TrialState.COMPLETE, "stopped": optuna.trial.TrialState.PRUNED}
        assert trial.state == want[rec["status"]]
        assert trial.user_attrs["member"] == key and trial.user_attrs["mlflow_run_id"] == runs[key][0].info.run_id
        assert "bias_sliced_w2" in trial.user_attrs and trial.params["lam"] == rec["settings"]["lam"]
    best = [m for m in members if m["role"] == "best"]
    assert {m["phase"] for m in best} == {"gan", "gan-best"}  # the chosen search member and its rerun
    # what reached the tracking server over HTTP, for a member that trained to the end
    assert state["tracking_uri"] == mlflow_server
    client = MlflowClient(mlflow_server)
    run = runs[next(m for m in members if m["phase"] == "ots")["trial_id"]][0]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "run")} >= {
        "run/map.png", "run/checkpoint.pt", "run/config.json", "run/result.json", "run/curves.png"}
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/l2_uvp")] == [20, 40, 60, 80]
    losses = client.get_metric_history(run.info.run_id, "train/loss_map")
    assert [m.step for m in losses] == [20, 40, 60, 80]  # log_every = 20 in the tiny space
    assert all(m.timestamp > 1_600_000_000_000 for m in losses)  # real timestamps (ms), not 0
    assert not {"final", "diverged", "iterations_since_restore", "eval/final"} & set(run.data.metrics)
    assert run.data.params["pair.name"] == "gaussian-shift" and run.data.tags["method"] == "ots"


def test_ctrl_c_stops_a_bundled_sweep_gracefully_and_resume_finishes_every_member_without_duplicates(
        ray_cluster, workdir):
    """A real SIGINT (what Ctrl-C sends; Tune installs its own SIGINT handler while a phase runs) during a bundled
    search: exit 130, the sweep and the cut members' runs marked interrupted (KILLED in MLflow), the lock released;
    the resume must not unpickle what is in the sweep folder, and it ends every member once, with no duplicate
    metric points. SIGTERM, SIGHUP: test_parts' in-process signal test; SIGUSR1: test_signals."""
    cluster, _ = ray_cluster
    space = bundled_space(workdir, samples=4, bundle=2, steps=300, eval_every=50, scheduler="fifo")
    driver = subprocess.Popen([venv_bin("otsr-sweep"), "run", str(space), "--address", cluster.address],
                              cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        wait_for(gan_checkpoint(workdir), driver, "a checkpoint", timeout=300)
        driver.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            stop_process_group(driver, signal.SIGKILL)
    assert driver.returncode == 130, err[-3000:]
    assert "interrupted (SIGINT)" in err and "otsr-sweep resume" in err
    assert "finished" not in out.lower().split("mlflow runs")[0].split("trial")[0]  # never claims success
    folder = only_sweep(workdir / "sweeps")
    assert not is_locked(folder)
    state = json.loads((folder / "state.json").read_text())
    assert state["status"] == "interrupted" and state["phases"]["gan"]["status"] == "interrupted"
    client = MlflowClient(state["tracking_uri"])
    cut = [k for k, m in state["members"].items() if m["status"] == "interrupted"]
    assert cut
    runs = json.loads((folder / "tracking_runs.json").read_text())
    assert all(client.get_run(runs[k]).info.status == "KILLED" for k in cut)  # never left RUNNING
    assert client.get_run(runs["parent"]).info.status == "KILLED"

    marker = workdir / "pwned"
    plant_pickles(folder, marker)
    resumed = subprocess.run([venv_bin("otsr-sweep"), "resume", str(folder), "--address", cluster.address,
                              "--verbose", "0"], cwd=workdir, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not marker.exists(), "resume unpickled a file from the sweep folder"
    members = assert_one_finished_run_per_trial(folder)
    assert len(members) == 4 + 1 + 2 and all(m["status"] == "completed" for m in members)
    assert any(m["metrics"]["resumed_from"] > 0 for m in members)
    for key in cut:
        for name in ("eval/l2_uvp", "train/loss_map"):
            steps = [m.step for m in client.get_metric_history(runs[key], name)]
            assert steps == sorted(set(steps)), f"{key} {name}: duplicate points {steps}"
        assert [m.step for m in client.get_metric_history(runs[key], "eval/l2_uvp")] == list(range(50, 301, 50))
    assert client.get_run(runs["parent"]).info.status == "FINISHED"
    assert json.loads((folder / "state.json").read_text())["status"] == "finished"


def test_a_stop_during_the_report_leaves_the_sweep_resumable(ray_cluster, workdir):
    """A signal that arrives while the report is written: the sweep ends interrupted (not finished, exit non-zero)
    and resume writes the report."""
    from sweep import interrupts
    from sweep.runner import SweepInterrupted

    cluster, _ = ray_cluster
    opts = Options(address=cluster.address, verbose=0)
    folder = create_sweep(tiny_space(workdir, custom="{worker: 1}", samples=1, seeds=1, steps=20, eval_every=10),
                          opts)
    run_sweep(folder, opts)
    state = json.loads((folder / "state.json").read_text())
    state["status"] = "running"
    (folder / "state.json").write_text(json.dumps(state))
    (folder / "report.html").unlink()
    interrupts.STOP.set()  # as the handler does when a signal arrives
    try:
        with pytest.raises(SweepInterrupted, match="during report"):
            run_sweep(folder, opts)
    finally:
        interrupts.STOP.clear()
    assert json.loads((folder / "state.json").read_text())["status"] == "interrupted"
    assert not (folder / "report.html").exists()
    run_sweep(folder, opts)
    assert (folder / "report.html").exists()
    assert json.loads((folder / "state.json").read_text())["status"] == "finished"
