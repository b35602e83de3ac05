"""A durable queue of writes: each operation is kept on disk (one JSON line each) until its target accepts it,
sent in order and retried with exponential backoff; nothing is lost when the process dies. Generic: ``apply`` is
whatever sends one operation (the MLflow sink, here).

By default ``submit`` sends at once. After ``start`` one background thread, the drainer, owns every send: ``submit``
only appends to the file and wakes it, so a caller on an event loop (Tune's callbacks) never waits on the target.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from otsr.checkpoint import atomic_write

MAX_BACKOFF_S = 60.0


class DurableQueue:
    """Operations (JSON-ready dicts) applied in order through ``apply``; pending ones live in ``path``."""

    def __init__(self, path: Path, apply: Callable[[dict[str, Any]], None]):
        self.path, self.apply = Path(path), apply
        self.items: list[dict[str, Any]] = self._load()
        self._retry_at, self._backoff = 0.0, 1.0
        self.last_error: str | None = None
        self._lock = threading.Lock()  # guards items and the file
        self._sending = threading.Lock()  # one sender at a time (the drainer, or a forced flush)
        self._wake, self._stop = threading.Event(), threading.Event()
        self._drainer: threading.Thread | None = None

    def _load(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def _save(self) -> None:
        if not self.items:
            self.path.unlink(missing_ok=True)
            return
        text = "".join(json.dumps(op) + "\n" for op in self.items)
        atomic_write(self.path, lambda tmp: tmp.write_text(text))

    def __len__(self) -> int:
        return len(self.items)

    def snapshot(self) -> list[dict[str, Any]]:
        """The queued operations now (a copy)."""
        with self._lock:
            return list(self.items)

    @property
    def running(self) -> bool:
        """Whether the drainer thread sends the writes."""
        return self._drainer is not None and self._drainer.is_alive()

    def submit(self, op: dict[str, Any]) -> None:
        """Queue one operation: on disk at once; sent now, or by the drainer when it runs."""
        with self._lock:
            self.items.append(op)
            if self.running:
                with open(self.path, "a") as f:  # the drainer rewrites the file when it has sent
                    f.write(json.dumps(op) + "\n")
        if self.running:
            self._wake.set()
        else:
            self.flush()

    def flush(self, force: bool = False) -> bool:
        """Send queued operations in order; stop at the first failure and back off. True when empty. While the
        drainer runs, an unforced flush only wakes it."""
        if self.running and not force and threading.current_thread() is not self._drainer:
            self._wake.set()
            return not self.items
        with self._sending:
            return self._send(force)

    def _send(self, force: bool) -> bool:
        with self._lock:
            if not self.items:
                return True
            if not force and time.monotonic() < self._retry_at:
                self._save()
                return False
        while True:
            with self._lock:
                if not self.items:
                    break
                op = self.items[0]
            try:
                self.apply(op)
            except Exception as e:  # any failure of the target: keep the write, never raise into the caller
                with self._lock:
                    self.last_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                    self._retry_at = time.monotonic() + self._backoff
                    self._backoff = min(MAX_BACKOFF_S, self._backoff * 2)
                    self._save()
                return False
            with self._lock:
                self.items.pop(0)
        with self._lock:
            self._backoff, self.last_error = 1.0, None
            self._save()
        return True

    def start(self) -> None:
        """Hand every send to one background thread (see the module docstring)."""
        if self.running:
            return
        self._stop.clear()
        self._drainer = threading.Thread(target=self._drain_loop, name="otsr-tracking-drainer", daemon=True)
        self._drainer.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the drainer after its current send; later submits send at once again."""
        if self._drainer is None:
            return
        self._stop.set()
        self._wake.set()
        self._drainer.join(timeout)
        self._drainer = None

    def idle(self) -> bool:
        """Nothing queued (everything sent)."""
        with self._lock:
            return not self.items

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the drainer to send everything queued; True when it has. Returns
        at once while the target is failing (it backs off: waiting would only delay the end of the run)."""
        deadline = time.monotonic() + timeout
        while not self.idle() and time.monotonic() < deadline and self.last_error is None:
            self._wake.set()
            time.sleep(0.05)
        return self.idle()

    def _drain_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=max(0.05, min(1.0, self._retry_at - time.monotonic())))
            self._wake.clear()
            with self._sending:
                self._send(False)

    def drain(self, attempts: int = 3, wait: float = 2.0) -> bool:
        """A few more tries (at the end of a run; the drainer is stopped first), then leave the rest on disk."""
        self.stop()
        for i in range(attempts):
            if i:
                time.sleep(wait * 2 ** (i - 1))
            if self.flush(force=True):
                return True
        return False
