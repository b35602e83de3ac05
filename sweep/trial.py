"""The only coupling between Ray Tune and the otsr core: ``run_trial(config)``.

It builds the pair from its spec and the trainer config from the pair's recipe and the trial's settings,
resumes from ``tune.get_checkpoint()``, and reports every evaluation through
``tune.report(metrics, checkpoint=...)`` so a checkpoint always arrives with metrics.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from otsr.checkpoint import load_checkpoint
from otsr.evaluation import metric_names
from otsr.pairs import PairSpec
from otsr.recipes import resolve_config
from otsr.result import Progress
from otsr.rundir import RunFolder
from otsr.trainers import train

PAIR_KEY = "pair"  # the pair spec rides in the trial config under this key (not a trainer parameter)


def split_config(config: dict[str, Any]) -> tuple[PairSpec, dict[str, Any]]:
    """Tune config -> (pair spec, trainer settings)."""
    cfg = dict(config)
    return PairSpec.from_dict(cfg.pop(PAIR_KEY)), cfg


def _trial_threads() -> int:
    """Torch threads = the CPUs Ray assigned to this trial (at least 1), so packed trials do not thrash."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(cpus))


def _assigned_gpus() -> float:
    return float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))


def _cap_gpu_memory() -> None:
    """A trial given a fraction of a GPU may allocate only that fraction of its memory (packed trials)."""
    share = ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0)
    if torch.cuda.is_available() and 0 < share < 1:
        torch.cuda.set_per_process_memory_fraction(share)


def run_trial(config: dict[str, Any]) -> None:
    """Tune trainable: train one map, report each evaluation with a checkpoint, then the final metrics."""
    spec, settings = split_config(config)
    torch.set_num_threads(_trial_threads())
    _cap_gpu_memory()
    pair = spec.build()
    cfg = resolve_config(pair, settings)
    resume = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            resume = load_checkpoint(Path(d))

    where = {"node_id": ray.get_runtime_context().get_node_id(),  # placement, visible in results and MLflow
             "resumed_from": int(resume["step"]) if resume else 0}  # > 0: this attempt continued a checkpoint

    losses: list[dict] = []  # loss readouts since the last report, sent with it (MLflow's train/* curves)

    def on_log(step: int, readout: dict[str, float]) -> None:
        losses.append({**readout, "step": step, "time": time.time()})

    def report(p: Progress) -> None:
        metrics = {**p.metrics, **where, "step": p.step, "final": int(p.final), "diverged": 0,
                   "train_history": list(losses)}
        losses.clear()
        with tempfile.TemporaryDirectory() as tmp:
            p.save_checkpoint(Path(tmp))
            if p.final:  # the artifacts of a finished trial travel with its last checkpoint
                RunFolder(tmp).write_final(p.metrics, p.map, pair, next(p.map.parameters()).device)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    if not torch.cuda.is_available() and (cfg.device.startswith("cuda") or _assigned_gpus() > 0):
        raise RuntimeError(f"trial asked for a GPU (device={cfg.device!r}, gpu share {_assigned_gpus():g}) but CUDA "
                           f"is not available on node {where['node_id'][:12]}: check the node's driver and torch build")
    result = train(cfg, pair, resume=resume, report=report, on_log=on_log)
    if result.diverged:  # NaN objectives: Optuna records the trial as failed, MLflow as FAILED
        tune.report({**dict.fromkeys(metric_names(pair), math.nan), **where, "step": result.step, "final": 1,
                     "diverged": 1, "reason": result.message})
