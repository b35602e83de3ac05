"""Signals a user or a scheduler sends the sweep driver: SIGINT, SIGTERM, SIGHUP and SIGUSR1 all stop it
gracefully (no new trials, running trials end at their last checkpoint, the sweep is marked interrupted and
resumable, exit code 128 + the signal); a second signal stops it at once (still resumable).

Ray Tune installs its own SIGUSR1 (and SIGINT) handler while a phase runs, whose stop otsr could not tell from
a finished phase; ``TakeBackSignals`` puts otsr's handler back at every step of Tune's loop, and phases are
judged done from otsr's own member records, never from Tune's return.
"""

from __future__ import annotations

import signal
import threading

from ray.tune import Callback, Stopper

SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, getattr(signal, "SIGUSR1", None)) if s)
STOP = threading.Event()
_received: list[int] = []


def _handler(signum, frame) -> None:
    if STOP.is_set():  # the second signal: stop at once
        raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
    _received.append(signum)
    STOP.set()


def install() -> None:
    """Take over the stop signals (main thread only); clears an earlier stop."""
    if threading.current_thread() is not threading.main_thread():
        return
    STOP.clear()
    _received.clear()
    for sig in SIGNALS:
        signal.signal(sig, _handler)


def take_back() -> None:
    """Re-install otsr's handler wherever a library replaced it."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        if signal.getsignal(sig) is not _handler:
            signal.signal(sig, _handler)


def exit_code() -> int:
    """128 + the first stop signal's number (130 for Ctrl-C, 143 for SIGTERM), 130 if none was recorded."""
    return 128 + (_received[0] if _received else signal.SIGINT)


def signal_name() -> str:
    """The first stop signal's name, e.g. 'SIGINT'."""
    return signal.Signals(_received[0]).name if _received else "interrupt"


class StopOnSignal(Stopper):
    """Tune stopper: after a stop signal, end every trial (they keep their last checkpoints)."""

    def __call__(self, trial_id, result) -> bool:
        """Trials are stopped all together, not one by one."""
        return False

    def stop_all(self) -> bool:
        """True once a stop signal arrived."""
        return STOP.is_set()


class TakeBackSignals(Callback):
    """Tune callback that keeps otsr's signal handler in place while Tune runs."""

    def on_step_begin(self, iteration, trials, **info):
        """Tune's controller loop: re-install the handler if Tune replaced it."""
        take_back()
