"""The Ray session of a sweep driver: in-process Ray on this machine (every listener on 127.0.0.1), or a
connection to an existing cluster (``--address``).

In-process Ray binds to loopback only when RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is set before ``ray`` is imported
(checked: set later, GCS, raylet and the driver listened on all interfaces); ``otsr-sweep`` sets it first thing.
A driver killed with SIGKILL cannot stop its Ray node, and Ray's agents outlive it (they ignore SIGTERM): the
node's process ids are recorded in ``~/.cache/otsr/inprocess-ray/<driver pid>.json`` and the next in-process
start ends whatever a dead driver left behind.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def keep_ray_on_loopback() -> None:
    """Make in-process Ray bind 127.0.0.1; must run before ``ray`` is imported (warns if too late)."""
    if LOOPBACK_ENV in os.environ:
        return
    os.environ[LOOPBACK_ENV] = "0"
    if "ray" in sys.modules:
        logging.getLogger("otsr").warning("ray was imported before %s=0 was set: in-process Ray may listen on all "
                                          "interfaces", LOOPBACK_ENV)


def record_dir() -> Path:
    """Where in-process nodes' process ids are kept between driver runs (one file per driver)."""
    return Path(os.environ.get("OTSR_CACHE") or Path.home() / ".cache" / "otsr") / "inprocess-ray"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    """Descendants of ``pid`` (Linux /proc), depth first."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            child = int(stat.parent.name)
            kids += [child, *_children(child)]
    return kids


def clean_leftovers() -> list[int]:
    """End the Ray processes that dead in-process drivers left running; returns the ids signalled."""
    ended = []
    for path in sorted(record_dir().glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
            continue
        driver = int(rec.get("driver", 0))
        if _alive(driver) and _cmdline(driver) == rec.get("driver_cmd", _cmdline(driver)):
            continue  # its driver still runs: not ours to stop
        for pid, cmd in rec.get("processes", {}).items():
            pid = int(pid)
            if _alive(pid) and _cmdline(pid) == cmd:  # the same process, not a recycled id
                os.kill(pid, signal.SIGKILL)
                ended.append(pid)
        path.unlink(missing_ok=True)
    return ended


def _record_node() -> None:
    import ray

    node = ray._private.worker._global_node  # the in-process node (private API, used only here)
    pids = []
    for infos in getattr(node, "all_processes", {}).values():
        for info in infos:
            if getattr(info, "process", None) is not None:
                pids.append(info.process.pid)
    pids += [c for p in list(pids) for c in _children(p)]
    path = record_dir() / f"{os.getpid()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"driver": os.getpid(), "driver_cmd": _cmdline(os.getpid()), "time": time.time(),
                                "processes": {str(p): _cmdline(p) for p in dict.fromkeys(pids) if _cmdline(p)}}))


def start(address: str | None, num_cpus: int | None, verbose: int) -> None:
    """Start (or connect to) Ray for this driver, once per process."""
    import ray

    from sweep import interrupts

    level = logging.INFO if verbose >= 3 else logging.WARNING
    if ray.is_initialized():
        interrupts.take_back()
        return
    try:
        _init(ray, address, num_cpus, level)
    finally:
        interrupts.take_back()  # ray.init put sys.exit on SIGTERM: a stop before Tune's first step stays graceful


def _init(ray, address: str | None, num_cpus: int | None, level: int) -> None:
    """Connect to ``address``, or start this driver's own in-process node and record its processes."""
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=level)
    else:
        keep_ray_on_loopback()
        clean_leftovers()
        # RAY_AUTH_MODE is left as the user has it: unset, Ray enables token auth for a new local node and makes
        # ~/.ray/auth_token once (its notice is dropped in console.py). Setting it here, after ``ray`` was imported,
        # reached Ray's child processes but not its cached config: on a machine without a token the GCS aborted.
        # address="local": a new node of this driver's own. With no address Ray joins the cluster that
        # /tmp/ray/ray_current_cluster names (whatever `ray start` or a test cluster last wrote there).
        # No idle workers prestarted: Tune's trials are actors, which get processes of their own (measured: an
        # actor never took a prestarted worker), and the prestarted ones only competed for the CPUs while the
        # sweep was being made (ray.init 2.45 -> 2.05 s on 2 cores). Workers at niceness 0, not Ray's 15: beside
        # any other busy process a niceness-15 trial gets ~1/30 of a core (a smoke sweep beside two one-thread
        # runs: 204-223 s, against 24 s at 0 and 11 s on idle cores).
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level=level,
                 _system_config={"prestart_worker_first_driver": False, "enable_worker_prestart": False,
                                 "worker_niceness": 0})
        _record_node()


def stop() -> None:
    """Shut Ray down (an in-process node's processes end with it) and forget the record."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    (record_dir() / f"{os.getpid()}.json").unlink(missing_ok=True)
