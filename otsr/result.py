"""What training hands back: ``Progress`` at each evaluation (to a report callback) and the final ``Result``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from otsr.config import TrainConfig
from otsr.pairs import Pair


@dataclasses.dataclass
class Progress:
    """What a report callback receives at each evaluation (and once more, ``final``, at the end)."""

    step: int
    metrics: dict[str, float]
    final: bool
    save_checkpoint: Callable[[Path], Path]  # writes a resumable checkpoint of this member into a folder
    map: nn.Module  # the member's map being trained, (B, ...) -> (B, ...) (read-only use: figures, extra metrics)
    member: int = 0  # index in the bundle (0 for a solo run)


@dataclasses.dataclass
class Result:
    """Outcome of ``train``: the learned map, its final metrics, the loss history, and the status."""

    config: TrainConfig
    pair: Pair
    status: str  # 'completed', 'diverged' or 'stopped' (early, by a report callback)
    message: str  # e.g. "diverged at step 41 in the critic loss"
    step: int  # outer steps done
    metrics: dict[str, float]
    history: list[dict[str, float]]
    map: nn.Module
    critic: nn.Module
    seconds: float
    precision: dict[str, str] = dataclasses.field(default_factory=dict)  # resolved per network
    evals: list[dict[str, float]] = dataclasses.field(default_factory=list)  # metrics at each evaluation

    @property
    def diverged(self) -> bool:
        """Whether a non-finite loss stopped the run."""
        return self.status == "diverged"

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (status, step, metrics, wall time, resolved precision, what is unavailable)."""
        return {"status": self.status, "message": self.message, "step": self.step, "metrics": self.metrics,
                "seconds": round(self.seconds, 3), "method": self.config.method, "pair": self.pair.spec().to_dict(),
                "precision": self.precision, "unavailable": self.pair.metric_notes(), "evals": self.evals}
