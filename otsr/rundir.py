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
from otsr.methods import get_method
from otsr.pairs import Pair
from otsr.plots import curves_figure, map_figure, save_png
from otsr.result import Result
from otsr.runtime import resolve_device
from otsr.state import resolved_widths, sample_shapes

METRICS_FILE = "metrics.json"


def run_config(cfg: TrainConfig, pair: Pair) -> dict[str, Any]:
    """What config.json holds: the trainer config as it runs (recipe applied; width and device resolved), the pair
    spec and the sample shapes."""
    width, critic_width = resolved_widths(cfg, tuple(pair.shape), tuple(pair.shape_q))
    try:
        device = str(resolve_device(cfg.device))
    except ValueError:
        device = cfg.device
    return {"train": cfg.to_dict(), "resolved": {"width": width, "critic_width": critic_width, "device": device},
            "pair": pair.spec().to_dict(), "shapes": sample_shapes(pair)}


def run_title(result: Result) -> str:
    """``gan λ=0.1 seed 0 on convex-mixture(dim=4): l2_uvp 12.3, bias_sliced_w2 0.41`` (figure titles): the
    method with its swept knob, and the pair's headline metrics."""
    cfg = result.config
    method = get_method(cfg.method)
    knob = f" {method.symbol}={getattr(cfg, method.swept):g}" if method.swept else ""
    head = f"{cfg.method}{knob} seed {cfg.seed}"
    shown = [f"{k} {result.metrics[k]:.3g}" for k in result.pair.headline().names() if k in result.metrics]
    return f"{head} on {result.pair.spec().describe()}" + (f": {', '.join(shown)}" if shown else "")


class RunFolder:
    """A run's output folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def start(self, cfg: TrainConfig, pair: Pair, keep_result: bool = False) -> RunFolder:
        """Create the folder, drop a stale metrics.json (it would mark this run complete, unless ``keep_result``:
        a resumed member that had already ended) and write the config."""
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"output folder {self.path} is a file")
        self.path.mkdir(parents=True, exist_ok=True)
        if not keep_result:
            (self.path / METRICS_FILE).unlink(missing_ok=True)
        atomic_write_json(self.path / "config.json", run_config(cfg, pair))
        return self

    def save_checkpoint(self, ckpt: dict[str, Any]) -> Path:
        """Write checkpoint.pt atomically."""
        self.path.mkdir(parents=True, exist_ok=True)
        return save_checkpoint(ckpt, self.path)

    def write_final(self, metrics: dict[str, float], map_module, pair: Pair, device: torch.device,
                    title: str = "") -> None:
        """map.png, then metrics.json (last: its presence marks a completed run)."""
        was_training = map_module.training
        map_module.eval()
        save_png(map_figure(map_module, pair, device, title=title), self.path / "map.png")
        map_module.train(was_training)
        atomic_write_json(self.path / METRICS_FILE, metrics)

    def finish(self, result: Result, device: torch.device) -> None:
        """result.json and the metric curves; for a completed run also the figure and metrics.json."""
        atomic_write_json(self.path / "result.json", result.summary())
        if result.evals:
            curves_figure(result.evals, self.path / "curves.png", title=run_title(result),
                          headline=result.pair.headline().names())
        if result.status == "completed":
            self.write_final(result.metrics, result.map, result.pair, device, title=run_title(result))

    def completed(self) -> bool:
        """Whether the folder holds a finished run."""
        return (self.path / METRICS_FILE).exists()
