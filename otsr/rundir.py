"""The run folder: the one writer of a run's files, used by ``otsr train``, ``otsr.solve`` and sweep trials.

Files: ``config.json`` (resolved trainer config, pair spec, sample shapes), ``checkpoint.pt``, ``result.json``
(status, metrics, precision, what is unavailable), ``map.png`` and ``metrics.json``, written last: only a
completed run has one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from otsr.checkpoint import atomic_write_json, save_checkpoint
from otsr.config import TrainConfig
from otsr.pairs import Pair
from otsr.plots import curves_figure, map_figure, save_png
from otsr.result import Result

METRICS_FILE = "metrics.json"


class RunFolder:
    """A run's output folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def start(self, cfg: TrainConfig, pair: Pair) -> RunFolder:
        """Create the folder, drop a stale metrics.json (it would mark this run complete) and write the config."""
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"output folder {self.path} is a file")
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / METRICS_FILE).unlink(missing_ok=True)
        atomic_write_json(self.path / "config.json", {"train": cfg.to_dict(), "pair": pair.spec().to_dict(),
                                                      "shapes": {"p": list(pair.shape), "q": list(pair.shape_q)}})
        return self

    def save_checkpoint(self, ckpt: dict[str, Any]) -> Path:
        """Write checkpoint.pt atomically."""
        self.path.mkdir(parents=True, exist_ok=True)
        return save_checkpoint(ckpt, self.path)

    def write_final(self, metrics: dict[str, float], map_module, pair: Pair, device: torch.device) -> None:
        """map.png, then metrics.json (last: its presence marks a completed run)."""
        was_training = map_module.training
        map_module.eval()
        save_png(map_figure(map_module, pair, device), self.path / "map.png")
        map_module.train(was_training)
        atomic_write_json(self.path / METRICS_FILE, metrics)

    def finish(self, result: Result, device: torch.device) -> None:
        """result.json and the metric curves; for a completed run also the figure and metrics.json."""
        atomic_write_json(self.path / "result.json", result.summary())
        if result.evals:
            curves_figure(result.evals, self.path / "curves.png", title=f"{result.config.method} on "
                          f"{result.pair.spec().describe()}")
        if result.status == "completed":
            self.write_final(result.metrics, result.map, result.pair, device)

    def completed(self) -> bool:
        """Whether the folder holds a finished run."""
        return (self.path / METRICS_FILE).exists()
