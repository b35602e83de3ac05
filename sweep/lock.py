"""One driver per sweep folder: an OS file lock on ``driver.lock``, which the kernel releases when the driver
dies (no stale-pid logic); ``driver.pid`` names the owner in the error a second driver gets."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from filelock import FileLock, Timeout

LOCK = "driver.lock"
PID = "driver.pid"


class SweepBusy(RuntimeError):
    """Another live driver holds the sweep folder."""


@contextlib.contextmanager
def driver_lock(folder: Path):
    """Hold the folder's driver lock for the duration of the block; raise SweepBusy naming the owner if taken."""
    folder = Path(folder)
    lock = FileLock(str(folder / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            owner = (folder / PID).read_text().strip()
        except OSError:
            owner = "?"
        raise SweepBusy(f"{folder} is being run by process {owner} (it holds {LOCK}); wait for it or stop it "
                        "first") from None
    try:
        (folder / PID).write_text(str(os.getpid()))
        yield
    finally:
        (folder / PID).unlink(missing_ok=True)
        lock.release()


def is_locked(folder: Path) -> bool:
    """Whether a live driver holds the folder (for tests and tools)."""
    lock = FileLock(str(Path(folder) / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False
