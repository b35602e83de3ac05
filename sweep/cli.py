"""``otsr-sweep``: run, resume and report sweeps; open the MLflow UI on the local store.

Exit codes: 0 done, 1 an unexpected error (a stack trace only with --debug), 2 bad input (one line naming
the file, key or value), 3 another driver holds the sweep folder, 128 + the signal when a signal stopped it
(130 for Ctrl-C, 143 for SIGTERM; resumable).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from sweep import ray_session

ray_session.keep_ray_on_loopback()  # before anything imports ray: in-process Ray then listens on 127.0.0.1 only

from otsr.checkpoint import CheckpointError  # noqa: E402
from otsr.imageio import DataError  # noqa: E402
from sweep.folder import SweepStateError  # noqa: E402
from sweep.mlflow_views import view_urls  # noqa: E402
from sweep.space import SpaceError, load_space, ray_request  # noqa: E402
from sweep.tracking import (  # noqa: E402
    TrackingError,
    default_artifact_root,
    default_tracking_uri,
    otsr_experiments,
    server_answers,
)

SMOKE = {"samples": 2, "steps": 40, "seeds": 1}  # --smoke-test: seconds, not minutes
EXIT_BAD_INPUT, EXIT_BUSY, EXIT_INTERRUPTED = 2, 3, 130


def _options(args: argparse.Namespace):
    from sweep.phases import Options

    if getattr(args, "num_cpus", None) is not None and args.num_cpus < 1:
        raise ValueError(f"--num-cpus {args.num_cpus}: in-process Ray needs at least 1 CPU")
    overrides = {k: v for k, v in (("samples", args.samples), ("steps", args.steps), ("seeds", args.seeds),
                                   ("cpu", args.cpus_per_trial), ("gpu", args.gpus_per_trial),
                                   ("threads", args.threads),
                                   ("max_concurrent", args.max_concurrent)) if v is not None}
    if getattr(args, "smoke_test", False):
        overrides = {**SMOKE, **overrides}
    return Options(address=args.address, tracking_uri=args.tracking_uri, storage=args.storage,
                   overrides=overrides, num_cpus=args.num_cpus, verbose=args.verbose)


def _start_ray(opts) -> None:
    """Start in-process Ray while the sweep is being made; a failure is left for ``run_sweep``, which starts Ray
    again (``ray_session.start`` is a no-op once Ray runs) and marks the sweep failed if it cannot."""
    try:
        ray_session.start(None, opts.num_cpus, opts.verbose)
    except Exception as e:  # noqa: BLE001 - reported by run_sweep's own start
        print(f"otsr-sweep: Ray did not start ({type(e).__name__}); trying again", file=sys.stderr, flush=True)
        ray_session.stop()  # a half-started node (up, but not recorded) would make the retry a no-op


def cmd_run(args: argparse.Namespace) -> int:
    """Validate everything, create the sweep folder, run all phases, print the report."""
    from sweep import interrupts
    from sweep.runner import create_sweep, run_sweep

    opts = _options(args)
    t0 = time.perf_counter()
    interrupts.install()
    folder = create_sweep(args.space, opts, alongside=None if opts.address else lambda: _start_ray(opts))
    print(f"sweep folder: {folder}", flush=True)
    run_sweep(folder, opts)
    print(f"sweep {folder.name} finished in {time.perf_counter() - t0:.1f}s; report: {folder / 'report.html'}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue a sweep whose driver died or was interrupted: finished trials are kept, the others continue."""
    from sweep import interrupts
    from sweep.runner import run_sweep

    opts = _options(args)
    interrupts.install()
    run_sweep(Path(args.sweep), opts)
    print(f"sweep {Path(args.sweep).name} finished; report: {Path(args.sweep) / 'report.html'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Rewrite and print the report of a sweep folder."""
    from sweep.report import write_report

    write_report(Path(args.sweep))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Check a search-space file (and its resources against the cluster, with --address) without running."""
    if args.cluster:
        from sweep.cluster_config import plan_nodes, validate_cluster_config

        full = validate_cluster_config(args.cluster)
    spec = load_space(args.space, _options(args).overrides)
    if args.cluster:
        res = spec.resources
        demand = {k: v for k, v in ray_request(res).items() if v}
        add, left = plan_nodes(full, [demand])
        if left:
            raise ValueError(f"{args.cluster}: no node type of the cluster fits a trial of {args.space} ({demand})")
        print(f"{args.cluster}: ok (Ray's own validation); a trial of {args.space} ({demand}) is placed on "
              f"{', '.join(add) or full['head_node_type']}")
    if args.address:
        from sweep import ray_session
        from sweep.space import check_resources_on_cluster

        ray_session.start(args.address, None, 1)
        check_resources_on_cluster(spec, args.address)
    objectives = ", ".join(f"{o.metric} ({o.mode})" for o in spec.objectives)
    bundles = ", ".join(f"{m.method} x{m.bundle}" for m in spec.methods if m.bundle > 1)
    print(f"{args.space}: ok ({', '.join(m.method for m in spec.methods)} on {spec.pair['name']}; objective "
          f"{objectives}{'; bundles ' + bundles if bundles else ''})")
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


UI_LOG = "mlflow-ui.log"


def ui_server_command(uri: str, artifact_root: str, port: int, workers: int) -> tuple[list[str], dict[str, str]]:
    """The lightest MLflow server for one local store: ``workers`` uvicorn workers (1: a single server process) and
    no job runner (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false: without it MLflow 3.17 adds a job runner and 7 huey
    consumers), bound to 127.0.0.1. Returns the command and its environment."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--default-artifact-root",
           artifact_root, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return cmd, {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def _ui_log_path(args: argparse.Namespace, uri: str) -> Path:
    """--log, else next to an sqlite store, else in --workdir."""
    if args.log:
        return Path(args.log)
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).parent / UI_LOG
    return Path(args.workdir) / UI_LOG


def _log_tail(path: Path, n: int = 5) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("  " + ln for ln in lines[-n:])


def cmd_ui(args: argparse.Namespace) -> int:
    """Serve the MLflow UI for the local store on 127.0.0.1 until interrupted (SIGINT or SIGTERM stop it and its
    workers); the runs-table addresses are printed once the server answers, the server's own lines go to a log
    file."""
    wd = Path(args.workdir)
    uri = args.tracking_uri or default_tracking_uri(wd)
    if args.workers < 1:
        raise ValueError(f"--workers {args.workers}: must be at least 1")
    if not _port_free(args.port):
        raise ValueError(f"--port {args.port}: 127.0.0.1:{args.port} is in use; pick another port")
    log_path = _ui_log_path(args, uri)
    try:
        log = log_path.open("a")
    except OSError as e:
        raise ValueError(f"--log {log_path}: cannot write the server's log ({e.strerror or e})") from None
    cmd, env = ui_server_command(uri, default_artifact_root(wd), args.port, args.workers)
    with log:
        proc = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env)

    def stop(*_):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, stop)
    base = f"http://127.0.0.1:{args.port}"
    try:
        deadline = time.time() + 120
        while not server_answers(base) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        if proc.poll() is not None:
            print(f"otsr-sweep: error: the MLflow server exited with code {proc.returncode}; the end of its log "
                  f"({log_path}):\n{_log_tail(log_path)}", file=sys.stderr)
            return proc.returncode or 1
        print(f"MLflow UI on {base} (Ctrl-C to stop; the server's log: {log_path}); each sweep experiment's "
              "comparison (runs grouped by role, λ and bias as columns) and its metrics against λ:", flush=True)
        for name, exp_id in otsr_experiments(uri):
            urls = view_urls(base, exp_id)
            print(f"  {name}: {urls['otsr-compare']}", flush=True)
            print(f"  {' ' * len(name)}  {urls['otsr-lambda']}", flush=True)
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="Ray cluster: 'auto' or 'ray://host:10001' (default: in-process Ray)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI, e.g. http://127.0.0.1:5000 "
                                          "(default: $MLFLOW_TRACKING_URI, else sqlite ./mlflow.db)")
    p.add_argument("--storage", default="sweeps", help="folder for sweep folders (shared storage on clusters)")
    p.add_argument("--samples", type=int, help="Optuna trials per searched method")
    p.add_argument("--steps", type=int, help="training steps per trial")
    p.add_argument("--seeds", type=int, help="seeds per configuration")
    p.add_argument("--cpus-per-trial", type=float, help="CPUs Ray reserves for each trial (default: the space's "
                   "resources.cpu, 1 in the shipped spaces)")
    p.add_argument("--threads", type=int, metavar="N", help="torch threads per trial (default: the trial's whole "
                   "CPUs, so 1 per trial when trials share the machine); raises each trial's CPU reservation to N, so "
                   "trials x threads never exceeds the CPUs Ray offers")
    p.add_argument("--gpus-per-trial", type=float, help="fractions pack several trials per GPU")
    p.add_argument("--max-concurrent", type=int, help="trials running at once (default: as resources allow)")
    p.add_argument("--num-cpus", type=int, help="CPUs for in-process Ray (default: all)")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2, 3],
                   help="0 silent, 1 one line per finished trial (default), 2 Tune's status table, 3 Tune's full "
                        "output")
    p.add_argument("--debug", action="store_true", help="print the stack trace of errors")


def build_parser() -> argparse.ArgumentParser:
    """Subcommands: run, resume, report, validate, ui."""
    import otsr

    p = argparse.ArgumentParser(prog="otsr-sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"otsr {otsr.__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a sweep from a search-space YAML file")
    r.add_argument("space")
    r.add_argument("--smoke-test", action="store_true", help=f"shrink the budget to {SMOKE}")
    _common(r)
    r.set_defaults(fn=cmd_run)
    s = sub.add_parser("resume", help="continue a sweep after the driver died or was interrupted")
    s.add_argument("sweep")
    _common(s)
    s.set_defaults(fn=cmd_resume)
    rep = sub.add_parser("report", help="write and print a sweep's bias report")
    rep.add_argument("sweep")
    rep.add_argument("--debug", action="store_true")
    rep.set_defaults(fn=cmd_report)
    v = sub.add_parser("validate", help="check a search-space file (with --address: against a running cluster; with "
                                        "--cluster: a cluster config, offline)")
    v.add_argument("space")
    v.add_argument("--cluster", help="a Ray cluster config (cluster/aws.yaml ...): validated offline with Ray's own "
                                     "code, and the space's trial placed on its node types")
    _common(v)
    v.set_defaults(fn=cmd_validate)
    u = sub.add_parser("ui", help="MLflow UI for the local store, on 127.0.0.1",
                       description="Serve the MLflow UI for one local store on 127.0.0.1 and print each sweep "
                                   "experiment's saved views; the server (one worker, no job runner) writes its own "
                                   "lines to a log file. Ctrl-C or SIGTERM stops it.")
    u.add_argument("--port", type=_port, default=5000, help="port on 127.0.0.1 (default 5000)")
    u.add_argument("--workdir", default=".", help="folder of the default store, mlflow.db and mlartifacts/ "
                                                  "(default: the current folder)")
    u.add_argument("--tracking-uri", help="the store to serve, e.g. sqlite:///path/mlflow.db (default: "
                                          "$MLFLOW_TRACKING_URI, else sqlite WORKDIR/mlflow.db)")
    u.add_argument("--workers", type=int, default=1, metavar="N",
                   help="uvicorn worker processes (default 1: one user browsing one store needs no more)")
    u.add_argument("--log", metavar="FILE",
                   help=f"the server's log file (default: {UI_LOG} next to an sqlite store, else in WORKDIR)")
    u.add_argument("--debug", action="store_true", help="print the stack trace of errors")
    u.set_defaults(fn=cmd_ui)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``otsr-sweep``; see the module docstring for the exit codes."""
    from sweep.lock import SweepBusy
    from sweep.runner import SweepInterrupted

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    from sweep.console import quiet_libraries

    quiet_libraries(getattr(args, "verbose", 1))  # before the MLflow store is created, not only when Ray starts
    try:
        return args.fn(args)
    except (SpaceError, TrackingError, FileNotFoundError, DataError, CheckpointError, SweepStateError,
            ValueError) as e:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"otsr-sweep: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SweepBusy as e:
        print(f"otsr-sweep: error: {e}", file=sys.stderr)
        return EXIT_BUSY
    except SweepInterrupted as e:
        print(f"otsr-sweep: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("otsr-sweep: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:
        if getattr(e, "errno", None) == 28:
            print(f"otsr-sweep: error: no space left on the device ({e.filename or 'sweep folder'})", file=sys.stderr)
            return EXIT_BAD_INPUT
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"otsr-sweep: unexpected error: {type(e).__name__}: {e} (rerun with --debug for the trace)",
              file=sys.stderr)
        return 1
    except Exception as e:  # an unexpected failure: one line, the trace with --debug
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"otsr-sweep: unexpected error: {type(e).__name__}: {e} (rerun with --debug for the trace)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
