"""A durable queue of writes: each operation is tried at once and, when its target does not answer, kept on
disk (one JSON line each) and retried in order with exponential backoff; nothing is lost when the process dies.
Generic: ``apply`` is whatever sends one operation (the MLflow sink, here)."""

from __future__ import annotations

import json
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

    def submit(self, op: dict[str, Any]) -> None:
        """Queue one operation and try to send the queue (unless a recent failure says to wait)."""
        self.items.append(op)
        self.flush()

    def flush(self, force: bool = False) -> bool:
        """Send queued operations in order; stop at the first failure and back off. True when empty."""
        if not self.items:
            return True
        if not force and time.monotonic() < self._retry_at:
            self._save()
            return False
        while self.items:
            try:
                self.apply(self.items[0])
            except Exception as e:  # any failure of the target: keep the write, never raise into the caller
                self.last_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
                self._retry_at = time.monotonic() + self._backoff
                self._backoff = min(MAX_BACKOFF_S, self._backoff * 2)
                self._save()
                return False
            self.items.pop(0)
        self._backoff, self.last_error = 1.0, None
        self._save()
        return True

    def drain(self, attempts: int = 3, wait: float = 2.0) -> bool:
        """A few more tries (at the end of a run), then leave the rest on disk."""
        for i in range(attempts):
            if self.flush(force=True):
                return True
            time.sleep(wait * (2**i))
        return False
