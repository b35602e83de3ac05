"""`otsr-sweep ui` serves the MLflow UI for the local store on 127.0.0.1 with two processes (MLflow's launcher and
one uvicorn worker, no job runner), prints only runs-table addresses, once the server answers (the server's lines
go to a log file next to the store), and takes its server down with it on SIGTERM; bad ports are one-line errors."""

import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.sweep_tests.conftest import venv_bin


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _descendants(pid: int) -> list[int]:
    from sweep.ray_session import _children

    return _children(pid)


@pytest.mark.slow
def test_ui_serves_on_loopback_and_sigterm_stops_its_server(tmp_path):
    port = _free_port()
    from sweep.mlflow_sink import open_client
    from sweep.tracking import default_tracking_uri

    exp_id = open_client(default_tracking_uri(tmp_path)).create_experiment("otsr/demo")
    err = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen([venv_bin("otsr-sweep"), "ui", "--port", str(port), "--workdir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        first = proc.stdout.readline().strip()  # printed only when the server answers
        assert first.startswith(f"MLflow UI on http://127.0.0.1:{port}")
        root = f"http://127.0.0.1:{port}/#/experiments/{exp_id}/runs?viewStateShareKey="
        assert proc.stdout.readline().strip() == f"otsr/demo: {root}otsr-compare&workflowType=machine_learning"
        lam = f"{root}otsr-lambda&compareRunsMode=CHART&workflowType=machine_learning"
        assert proc.stdout.readline().strip() == lam
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            assert r.status == 200
        children = _descendants(proc.pid)
        assert len(children) == 2, [Path(f"/proc/{c}/cmdline").read_text() for c in children]  # launcher, uvicorn
        assert "Application startup complete" in (tmp_path / "mlflow-ui.log").read_text()
        proc.send_signal(signal.SIGTERM)  # to the command only, as a process manager does
        assert proc.wait(timeout=60) == 0
        deadline = time.time() + 30
        while any(Path(f"/proc/{c}").exists() for c in children) and time.time() < deadline:
            time.sleep(0.5)
        assert not [c for c in children if Path(f"/proc/{c}").exists()], "the MLflow server outlived its command"
        assert not _listening(port)
        assert (tmp_path / "stderr.txt").read_text() == ""  # the server's INFO lines and warnings are in its log
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("port,message", [("99999", "99999 is not a port number"), ("-5", "-5 is not a port number"),
                                          ("web", "'web' is not a port number")])
def test_bad_ports_are_errors(port, message):
    out = subprocess.run([venv_bin("otsr-sweep"), "ui", "--port", port], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and message in out.stderr


def test_a_port_in_use_is_an_error_before_anything_starts(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = subprocess.run([venv_bin("otsr-sweep"), "ui", "--port", str(port), "--workdir", str(tmp_path)],
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and f"127.0.0.1:{port} is in use" in out.stderr


def test_ui_help_describes_every_option():
    from sweep.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "cmd")
    ui = sub.choices["ui"]
    assert all(a.help for a in ui._actions), [a.dest for a in ui._actions if not a.help]
    assert {"--port", "--workdir", "--tracking-uri", "--workers", "--log", "--debug"} <= set(ui._option_string_actions)
