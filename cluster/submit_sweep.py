"""Entry script for `ray submit cluster/<x>.yaml cluster/submit_sweep.py -- SPACE.yaml [otsr-sweep options]`.

Runs on the head node: connects to the running cluster, logs to the head's MLflow server over its private
address, and keeps sweep folders on the shared mount so every node reads the same checkpoints.
"""

import socket
import subprocess
import sys
from pathlib import Path

REPO = Path.home() / "otsr"


def head_address() -> str:
    """The head's private address (where the MLflow server listens)."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    return out[0] if out else socket.gethostbyname(socket.gethostname())


if __name__ == "__main__":
    from sweep.cli import main

    space, *rest = sys.argv[1:]
    space_path = Path(space) if Path(space).is_absolute() else REPO / space
    sys.exit(main(["run", str(space_path), "--address", "auto", "--tracking-uri", f"http://{head_address()}:5000",
                   "--storage", "/mnt/otsr/sweeps", *rest]))
