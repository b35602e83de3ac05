"""bench/gpu_check.sh, the one prepared command for a lent GPU machine, end to end in its CPU dry mode, with only
what that machine has: ray, optuna, mlflow, yaml, matplotlib and tqdm cannot be imported."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCKED = ("ray", "optuna", "mlflow", "yaml", "matplotlib", "tqdm")
SITE = f"""
import sys
for name in {BLOCKED!r}:  # as if not installed: import raises ModuleNotFoundError, importlib.util.find_spec is None
    sys.modules[name] = None
"""
MISSING = "None in sys.modules"  # what ModuleNotFoundError says for a blocked package


def test_gpu_check_dry_run_passes_with_only_the_gpu_machines_packages(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE)
    out = tmp_path / "out"
    env = {**os.environ, "GPU_CHECK_DRY": "1", "PYTHON": sys.executable, "OTSR_CACHE": str(tmp_path / "cache"),
           "OTSR_DATA": str(tmp_path / "data"), "PYTHONPATH": str(site)}
    proc = subprocess.run(["bash", "bench/gpu_check.sh", str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    log = (out / "log.txt").read_text() if (out / "log.txt").exists() else ""
    assert proc.returncode == 0, proc.stdout[-3000:] + log[-3000:]
    assert "gpu_check (dry run on CPU): all checks passed" in proc.stdout
    assert MISSING not in log  # nothing reached for a blocked package
    steps = dict(line.split() for line in (out / "steps.txt").read_text().splitlines())
    assert steps == {name: "0" for name in ("precision", "quality", "bundles", "sr", "potential", "images", "speed",
                                            "packing")}
    for f in ("quality.json", "bundles.json", "sr_check.json", "potential.json", "speed.json", "packing.json"):
        json.loads((out / f).read_text())  # complete and well formed
    assert set(json.loads((out / "quality.json").read_text())["pairs"]) == {"convex-mixture:0", "icnn-mixture:1"}
    assert not (tmp_path / "cache").exists()  # the dry run's icnn-mixture pair came fitted with the package
    verdicts = (out / "verdicts.txt").read_text()
    assert "not judged" in verdicts  # the dry run says what it could not judge
    assert "[FAIL]" not in verdicts


def test_the_judge_fails_a_step_whose_command_failed_or_whose_file_is_broken(tmp_path):
    from otsr.bench.gpu_check import judge

    (tmp_path / "speed.json").write_text("{not json")
    ok, lines = judge(tmp_path, dry=True, steps={"precision": 1, "speed": 0})
    assert not ok
    assert any(line.startswith("[FAIL] precision: its command failed") for line in lines)
    assert any(line.startswith("[FAIL] speed: result unreadable") for line in lines)
