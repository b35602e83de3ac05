"""The only coupling between Ray Tune and the otsr core: ``run_trial(config)``.

It builds the pair and the trainer config, resumes from ``tune.get_checkpoint()``, and reports every
evaluation through ``tune.report(metrics, checkpoint=...)`` so a checkpoint always arrives with metrics.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from otsr.checkpoint import atomic_write_json, load_checkpoint
from otsr.config import TrainConfig
from otsr.evaluation import metric_names
from otsr.pairs import make_pair
from otsr.plots import map_figure, save_png
from otsr.trainers import TRAINERS, Progress

PAIR_KEY = "pair"  # the pair spec rides in the trial config under this key (not a trainer parameter)


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tune config -> (pair spec, trainer settings)."""
    cfg = dict(config)
    return cfg.pop(PAIR_KEY), cfg


def _trial_threads() -> int:
    """Torch threads = the CPUs Ray assigned to this trial (at least 1), so packed trials do not thrash."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(cpus))


def _cap_gpu_memory() -> None:
    """A trial given a fraction of a GPU may allocate only that fraction of its memory (packed trials)."""
    share = ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0)
    if torch.cuda.is_available() and 0 < share < 1:
        torch.cuda.set_per_process_memory_fraction(share)


def run_trial(config: dict[str, Any]) -> None:
    """Tune trainable: train one map, report each evaluation with a checkpoint, then the final metrics."""
    pair_spec, train_cfg = split_config(config)
    torch.set_num_threads(_trial_threads())
    _cap_gpu_memory()
    cfg = TrainConfig.from_dict(train_cfg)
    pair = make_pair(pair_spec["name"], **pair_spec["params"])
    resume = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            resume = load_checkpoint(Path(d))

    where = {"node_id": ray.get_runtime_context().get_node_id(),  # placement, visible in results and MLflow
             "resumed_from": int(resume["step"]) if resume else 0}  # > 0: this attempt continued a checkpoint

    def report(p: Progress) -> None:
        metrics = {**p.metrics, **where, "step": p.step, "final": int(p.final), "diverged": 0}
        with tempfile.TemporaryDirectory() as tmp:
            p.save_checkpoint(Path(tmp))
            if p.final:  # the artifacts of a finished trial travel with its last checkpoint
                p.map.eval()
                save_png(map_figure(p.map, pair, next(p.map.parameters()).device), Path(tmp) / "map.png")
                atomic_write_json(Path(tmp) / "metrics.json", p.metrics)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    result = TRAINERS[cfg.method](cfg, pair, resume=resume, report=report)
    if result.diverged:  # NaN objectives: Optuna records the trial as failed, MLflow as FAILED
        tune.report({**dict.fromkeys(metric_names(pair), math.nan), **where, "step": result.step, "final": 1,
                     "diverged": 1, "reason": result.message})
