"""Reading a finished sweep back: its member configurations from otsr's state file, its runs from MLflow."""

from __future__ import annotations

import json
import pickle
import subprocess
import time
from collections import Counter
from pathlib import Path

from mlflow.tracking import MlflowClient

from sweep.report import collect_trials


def only_sweep(storage: Path) -> Path:
    """The single sweep folder under ``storage``."""
    folders = [p for p in Path(storage).iterdir() if (p / "state.json").exists()]
    assert len(folders) == 1, folders
    return folders[0]


def trial_runs(folder: Path) -> tuple[list[dict], dict[str, list]]:
    """(member configurations from the state file, MLflow runs grouped by member key) of a sweep folder."""
    state = json.loads((folder / "state.json").read_text())
    client = MlflowClient(state["tracking_uri"])
    runs = client.search_runs([state["experiment_id"]], max_results=1000)
    by_trial: dict[str, list] = {}
    for r in runs:
        tid = r.data.tags.get("otsr.member")
        if tid:
            by_trial.setdefault(tid, []).append(r)
    return collect_trials(folder), by_trial


def assert_one_finished_run_per_trial(folder: Path) -> list[dict]:
    """Every member has exactly one MLflow run, nested under the sweep's run, ended; returns the members."""
    trials, by_trial = trial_runs(folder)
    parent = json.loads((folder / "tracking_runs.json").read_text())["parent"]
    assert trials
    ids = Counter(t["trial_id"] for t in trials)
    assert all(n == 1 for n in ids.values())
    assert set(by_trial) == set(ids), (set(by_trial) ^ set(ids))
    for tid, runs in by_trial.items():
        assert len(runs) == 1, f"trial {tid} has {len(runs)} MLflow runs"
        run = runs[0]
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.info.status in ("FINISHED", "FAILED", "KILLED")  # KILLED: stopped early by ASHA
        method, seed = run.data.tags["method"], run.data.tags["seed"]
        assert run.info.run_name.startswith(method + " ")
        assert run.info.run_name.endswith(f" s{seed}") or "(stopped @" in run.info.run_name
    return trials


class Payload:
    """Unpickling this writes a marker file: what a planted pickle could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def plant_pickles(folder: Path, marker: Path) -> None:
    """Replace every pickle Tune left in a sweep folder (and its experiment file) with a ``Payload``: whoever can
    write a shared sweep folder plants code; ``resume`` must not run it."""
    planted = [p for p in (folder / "ray").rglob("*.pkl")] + [folder / "ray" / "gan" / "tuner.pkl"]
    for p in planted:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(pickle.dumps(Payload(marker)))


def wait_for(cond, proc: subprocess.Popen, what: str, timeout: float = 180) -> None:
    """Poll ``cond`` until it holds, failing if the driver process ``proc`` ends first or ``timeout`` s pass."""
    deadline = time.time() + timeout
    while not cond():
        if proc.poll() is not None:
            err = proc.stderr.read()[-2000:] if proc.stderr else ""
            raise AssertionError(f"driver ended (rc {proc.returncode}) before {what}: {err}")
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def gan_checkpoint(workdir: Path):
    """A condition for ``wait_for``: some GAN member of the sweep under ``workdir`` has checkpointed."""
    return lambda: list(Path(workdir).glob("sweeps/*/members/gan-*/checkpoint.pt"))
