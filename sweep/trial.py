"""The only coupling between Ray Tune and the otsr core: ``run_trial(config)`` trains one bundle of member
configurations (a bundle of one by default) with ``otsr.train_bundle``.

Each member writes an ordinary run folder under ``<sweep>/members/<key>/`` (checkpoint at every evaluation,
result, metrics, curves, map), and the trial reports every evaluation to Tune as ``{"members": {key: ...}}``.
A trial restarted by Tune (a failed node) or by ``otsr-sweep resume`` continues from those checkpoints, loaded
as tensors only. In a search phase with ASHA, each member is judged at each evaluation by the phase's rung
actor and stopped when it loses; the bundle then drops it (``otsr.trainers``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from otsr.checkpoint import CHECKPOINT_NAME, load_checkpoint
from otsr.evaluation import metric_names
from otsr.pairs import PairSpec
from otsr.recipes import resolve_config
from otsr.result import Progress
from otsr.state import bundle_lead
from otsr.trainers import train_bundle
from sweep.records import MemberReport, MemberStatus

PAIR_KEY = "pair"


def _trial_threads(asked: int = 0) -> int:
    """Torch threads: ``asked`` (resources.threads, never more than the trial's CPUs: the space checks it), else
    the whole CPUs Ray assigned to this trial, at least 1; so trials x threads stays within the CPUs Ray offers."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return asked or max(1, int(cpus))


def _assigned_gpus() -> float:
    return float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))


def _cap_gpu_memory() -> None:
    """A trial given a fraction of a GPU may allocate only that fraction of its memory (packed trials)."""
    share = _assigned_gpus()
    if torch.cuda.is_available() and 0 < share < 1:
        torch.cuda.set_per_process_memory_fraction(share)


def _resume_points(folders: list[Path], members: list[dict[str, Any]]) -> list[dict] | None:
    """The members' checkpoints when every member has one (a bundle saves together), else None (a fresh start).

    A member the driver already recorded as ended (stopped early between two checkpoints) stays ended. A member that
    ended early holds the checkpoint it left the bundle with, which may be at another step than the others'.
    """
    if not all((f / CHECKPOINT_NAME).is_file() for f in folders):
        return None
    ckpts = [load_checkpoint(f) for f in folders]
    for c, m in zip(ckpts, members):
        status = MemberStatus(m["status"])
        if status.ended and status is not MemberStatus.ERROR and c.get("status", "running") == "running":
            c["status"] = status.value
    return ckpts


def run_trial(config: dict[str, Any]) -> None:
    """Tune trainable: train the bundle, report each evaluation (every member), then every member's ending."""
    torch.set_num_threads(_trial_threads(config.get("threads", 0)))
    _cap_gpu_memory()
    pair = PairSpec.from_dict(config[PAIR_KEY]).build()
    members = config["members"]
    keys = [m["key"] for m in members]
    cfgs = [resolve_config(pair, {**config["base"], **m["settings"]}) for m in members]
    folders = [Path(config["sweep"]) / "members" / k for k in keys]
    resume = _resume_points(folders, members)
    where = {"node_id": ray.get_runtime_context().get_node_id(),  # placement, visible in results and MLflow
             "resumed_from": int(bundle_lead(resume)["step"]) if resume else 0}
    asha = ray.get_actor(config["asha"]) if config.get("asha") else None
    rank_by = config["rank_by"]  # what the rung actor judges members by: the objective, then also_rank_by
    losses: list[list[dict]] = [[] for _ in keys]  # loss readouts since the last report (MLflow's train/*)

    def on_log(step: int, rows) -> None:
        now = time.time()
        for i, row in enumerate(rows):
            if row is not None:
                losses[i].append({**row, "time": now})

    def entry(i: int, status: str, step: int, metrics: dict[str, float], message: str = "") -> dict[str, Any]:
        out = MemberReport(MemberStatus(status), step, metrics, list(losses[i]),
                           [{"step": step, **metrics}] if metrics else [], message)
        losses[i].clear()
        return out.to_json()

    def report(progress: list[Progress]):
        stop = []
        if asha is not None and not progress[0].final:
            items = [(keys[p.member], p.step, {m: float(p.metrics.get(m, math.nan)) for m in rank_by})
                     for p in progress]
            losers = set(ray.get(asha.decide_many.remote(items)))
            stop = [p.member for p in progress if keys[p.member] in losers]
        out = {}
        for p in progress:
            status = MemberStatus.COMPLETED if p.final else MemberStatus.STOPPED if p.member in stop \
                else MemberStatus.RUNNING
            message = f"stopped early at step {p.step}" if status is MemberStatus.STOPPED else ""
            out[keys[p.member]] = entry(p.member, status, p.step, _numeric(p.metrics), message)
        tune.report({"members": out, "step": progress[0].step, **where})
        return stop

    if not torch.cuda.is_available() and (cfgs[0].device.startswith("cuda") or _assigned_gpus() > 0):
        raise RuntimeError(f"trial asked for a GPU (device={cfgs[0].device!r}, gpu share {_assigned_gpus():g}) but "
                           f"CUDA is not available on node {where['node_id'][:12]}: check the node's driver and "
                           f"torch build")
    if resume:  # what the checkpoints hold that the driver may not have received (it keeps each step once)
        tune.report({"members": {k: _catch_up(c) for k, c in zip(keys, resume)},
                     "step": int(bundle_lead(resume)["step"]), **where})
    results = train_bundle(cfgs, pair, resume=resume, out_dirs=folders, report=report, on_log=on_log)
    names = metric_names(pair)
    final = {}
    for i, res in enumerate(results):  # every member's ending, diverged ones included
        metrics = _numeric(res.metrics) if res.status != MemberStatus.DIVERGED else dict.fromkeys(names, math.nan)
        final[keys[i]] = entry(i, res.status, res.step, metrics, res.message)
    tune.report({"members": final, "step": max(r.step for r in results), "final": 1, **where})


def _catch_up(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A member's evaluations and loss readouts up to its checkpoint, as a report entry."""
    evals = [{k: v for k, v in e.items() if isinstance(v, (int, float))} for e in json.loads(ckpt.get("evals", "[]"))]
    evals = [e for e in evals if e.get("step", 0) > 0]
    status = MemberStatus(ckpt.get("status", "running"))
    if status not in (MemberStatus.STOPPED, MemberStatus.DIVERGED):
        status = MemberStatus.RUNNING
    latest = {k: v for k, v in (evals[-1] if evals else {}).items() if k != "step"}
    return MemberReport(status, int(ckpt["step"]), latest, json.loads(ckpt.get("history", "[]")), evals,
                        ckpt.get("message", "")).to_json()


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
