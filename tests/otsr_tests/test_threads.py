"""`otsr train` at its default threads keeps its speed beside a CPU hog (torch's own default, one thread per core,
stalls there), and its progress bar shows a rate long before the first loss readout."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STEPS = 200  # log_every is 100: a rate shown before step 100 comes from the per-step ticks


def _train(out: Path) -> tuple[float, str]:
    """One small run in a fresh process at the default threads: its steps/s (result.json) and its stderr."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-m", "otsr.cli", "train", "--pair", "convex-mixture", "--dim", "16",
                           "--method", "ots", "--steps", str(STEPS), "--final-eval-samples", "1024",
                           "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((out / "result.json").read_text())
    return res["step"] / res["seconds"], proc.stderr


@pytest.mark.slow
@pytest.mark.serial
def test_default_threads_keep_the_speed_beside_a_cpu_hog(tmp_path):
    idle, err = _train(tmp_path / "idle")
    frames = [f for f in re.split(r"[\r\n]", err) if "step/s" in f]
    first_rate = next(f for f in frames if re.search(r"\d step/s|\dstep/s", f) and "?" not in f)
    assert int(re.search(r"(\d+)/%d" % STEPS, first_rate).group(1)) < 100, first_rate
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1)  # the hog is spinning before the run starts
        busy, _ = _train(tmp_path / "busy")
    finally:
        hog.kill()
        hog.wait()
    print(f"otsr train steps/s: {idle:.1f} idle, {busy:.1f} beside a CPU hog")
    assert busy > idle / 3, f"{busy:.1f} steps/s beside a CPU hog against {idle:.1f} without"
