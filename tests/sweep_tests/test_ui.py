"""`otsr-sweep ui` serves the MLflow UI for the local store on 127.0.0.1."""

import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from tests.sweep_tests.conftest import venv_bin


@pytest.mark.slow
def test_ui_serves_on_loopback(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from mlflow.tracking import MlflowClient

    from sweep.tracking import default_tracking_uri

    exp_id = MlflowClient(default_tracking_uri(tmp_path)).create_experiment("otsr/demo")
    proc = subprocess.Popen([venv_bin("otsr-sweep"), "ui", "--port", str(port), "--workdir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip().startswith(f"MLflow UI on http://127.0.0.1:{port}")
        # the runs table of each sweep experiment, in the machine-learning view (not MLflow's GenAI landing page)
        assert proc.stdout.readline().strip() == \
            f"otsr/demo: http://127.0.0.1:{port}/#/experiments/{exp_id}?workflowType=machine_learning"
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None and time.time() < deadline
                time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
