"""Entry script for `ray submit cluster/<x>.yaml cluster/submit_sweep.py -- SPACE.yaml [otsr-sweep options]`.

Runs on the head node (start it with `ray submit --tmux` so a dropped SSH session does not stop it): connects to
the running cluster with token auth, logs to the head's MLflow server on 127.0.0.1 (the driver is its only
client), and keeps sweep folders on the shared mount so every node reads the same checkpoints.
"""

import os
import sys
from pathlib import Path

REPO = Path.home() / "otsr"

if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    from sweep.cli import main

    space, *rest = sys.argv[1:]
    space_path = Path(space) if Path(space).is_absolute() else REPO / space
    sys.exit(main(["run", str(space_path), "--address", "auto", "--tracking-uri", "http://127.0.0.1:5000",
                   "--storage", "/mnt/otsr/sweeps", *rest]))
