"""Real parts for the sweep tests: one Ray cluster per session (head + worker node, all on 127.0.0.1)
and one `mlflow server` process bound to 127.0.0.1, both stopped at the end."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

TINY_SPACE = """
name: tiny
pair: {name: gaussian-shift, params: {dim: 4, shift: 2.0}}
objective: {metric: l2_uvp, mode: min}
budget: {steps: STEPS, seeds: SEEDS, eval_every: EVAL}
scheduler: {type: fifo}
resources: {cpu: 0.5, gpu: 0, custom: {CUSTOM}}
methods:
  gan:
    samples: SAMPLES
    fixed: {batch_size: 64, width: 16, depth: 2, critic_steps: 2, lr_map: 1.0e-3, lr_critic: 1.0e-3,
            eval_samples: 256, final_eval_samples: 1024, log_every: 20}
    search:
      lam: {type: float, low: 1.0e-2, high: 10.0, log: true}
  ots:
    fixed: {batch_size: 64, width: 16, depth: 2, map_steps: 2, lr_map: 1.0e-3, lr_critic: 1.0e-3,
            eval_samples: 256, final_eval_samples: 1024, log_every: 20}
"""


def tiny_space(tmp_path: Path, custom: str = "{}", samples: int = 3, steps: int = 60, seeds: int = 2,
               eval_every: int = 20) -> Path:
    """Write a seconds-sized search space (gaussian-shift, GAN lambda search, OTS per seed)."""
    text = TINY_SPACE.replace("{CUSTOM}", custom).replace("SAMPLES", str(samples)).replace("STEPS", str(steps))
    text = text.replace("SEEDS", str(seeds)).replace("EVAL", str(eval_every))
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def ray_cluster():
    """A head node and one worker node (custom resource 'worker') on 127.0.0.1; the driver connects. The worker
    declares one GPU that this machine does not have: the case of a node whose CUDA is broken."""
    import ray
    from ray.cluster_utils import Cluster

    # the nodes' workers at niceness 0, as in-process Ray's (sweep.ray_session): at Ray's default 15 the trials
    # starve beside the other xdist worker's tests
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_worker_niceness", "0")
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        worker = cluster.add_node(num_cpus=2, num_gpus=1, resources={"worker": 4})
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        try:
            yield cluster, worker
        finally:
            ray.shutdown()
            cluster.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(root: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start a real `mlflow server` on 127.0.0.1 with an sqlite store under ``root``; wait until healthy."""
    root.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{root / 'db.sqlite'}", "--artifacts-destination",
           str(root / "artifacts"), "--workers", "1"]
    with open(root / "server.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, uri
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            stop_process_group(proc)
            raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)


def stop_process_group(proc: subprocess.Popen, sig: int = 15) -> None:
    """Stop a process started with start_new_session (and its children)."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 with an sqlite store; yields its URI."""
    proc, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield uri
    finally:
        stop_process_group(proc)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run sweeps from a fresh working directory (embedded MLflow store and sweep folders go there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def venv_bin(name: str) -> str:
    """A console script of this environment."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else shutil.which(name)
