"""Which code produced a figure: the git commit of the working tree, stored with sweep runs and benchmark rows."""

from __future__ import annotations

import subprocess
from pathlib import Path


def code_version() -> str:
    """The git commit of the working tree (with '+dirty'), or 'unknown' outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
