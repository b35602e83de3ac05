"""The loop skeleton shared by both trainers: setup, sync points (losses, divergence, evaluation,
checkpoints), resume and outputs. The adversarial updates themselves live in ``ots.py`` and ``gan.py``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from otsr.checkpoint import load_checkpoint
from otsr.config import TrainConfig
from otsr.evaluation import check_pair, evaluate
from otsr.pairs import Pair
from otsr.result import Progress, Result
from otsr.rundir import RunFolder
from otsr.state import TrainState, build_state

LOSS_NAMES = ("critic", "map")  # which loss a divergence is blamed on, in the order outer steps return them

OuterStep = Callable[[TrainState, TrainConfig, Pair], torch.Tensor]


def run(cfg: TrainConfig, pair: Pair, outer_step: OuterStep, *, report: Callable[[Progress], None] | None = None,
        resume: dict[str, Any] | Path | str | None = None, out_dir: Path | str | None = None,
        on_log: Callable[[int, dict[str, float]], None] | None = None) -> Result:
    """Train with ``outer_step`` (returns the step's [critic loss, map loss] as one device tensor).

    Host syncs happen only every ``log_every`` steps and at evaluations. A non-finite loss ends the run
    as ``diverged`` at the first bad step; no metrics.json is written for it.
    """
    state = build_state(cfg, pair)
    check_pair(pair, state.device, cfg.cost)  # the final evaluation's code path, before any training
    if resume is not None:
        ckpt = resume if isinstance(resume, dict) else load_checkpoint(resume, map_location=state.device)
        state.load(ckpt)
    out = RunFolder(out_dir).start(cfg, pair) if out_dir is not None else None
    if state.step == 0:  # the start (identity, Bures or bicubic map): the first point of every curve
        _evaluate(state, cfg, pair, cfg.eval_samples, full=False)
    t0 = time.perf_counter()
    acc = torch.zeros(2, device=state.device)
    first_bad = torch.full((2,), math.inf, device=state.device)
    n_acc = 0

    def save(folder: Path) -> Path:
        return RunFolder(folder).save_checkpoint(state.to_checkpoint(cfg, pair))

    while state.step < cfg.steps:
        _set_lr(state, cfg)
        losses = outer_step(state, cfg, pair).detach().float()
        state.step += 1
        acc += losses
        n_acc += 1
        first_bad = torch.where(torch.isfinite(losses) | torch.isfinite(first_bad), first_bad,
                                torch.full_like(first_bad, state.step))
        s = state.step
        is_eval, is_ckpt = s % cfg.eval_every == 0, out is not None and s % cfg.checkpoint_every == 0
        if not (s % cfg.log_every == 0 or is_eval or is_ckpt or s == cfg.steps):
            continue
        bad = first_bad.tolist()  # host sync
        if any(math.isfinite(b) for b in bad):
            which = min(range(2), key=lambda i: bad[i])
            msg = f"diverged at step {int(bad[which])} in the {LOSS_NAMES[which]} loss (non-finite value)"
            return _finish(state, cfg, pair, out, t0, "diverged", msg, {})
        mean = (acc / n_acc).tolist()
        state.history.append({"step": s, "loss_critic": mean[0], "loss_map": mean[1]})
        acc.zero_()
        n_acc = 0
        if on_log is not None:
            on_log(s, state.history[-1])
        if is_ckpt:
            save(out.path)
        if is_eval and s < cfg.steps:
            m = _evaluate(state, cfg, pair, cfg.eval_samples, full=False)
            if report is not None:
                report(Progress(s, {**m, **_last_losses(state)}, False, save, state.map))
    metrics = _evaluate(state, cfg, pair, cfg.final_eval_samples, full=True)
    if out is not None:
        save(out.path)
    if report is not None:
        report(Progress(state.step, {**metrics, **_last_losses(state)}, True, save, state.map))
    return _finish(state, cfg, pair, out, t0, "completed", f"completed {state.step} steps", metrics)


def _set_lr(state: TrainState, cfg: TrainConfig) -> None:
    """Learning rates follow the schedule as a pure function of the step (nothing extra to checkpoint)."""
    factor = cfg.lr_factor(state.step)
    for opt, base in ((state.opt_map, cfg.lr_map), (state.opt_critic, cfg.lr_critic)):
        for group in opt.param_groups:
            group["lr"] = base * factor


def _last_losses(state: TrainState) -> dict[str, float]:
    return {k: v for k, v in state.history[-1].items() if k != "step"} if state.history else {}


def _evaluate(state: TrainState, cfg: TrainConfig, pair: Pair, n: int, full: bool) -> dict[str, float]:
    """Evaluate the map and record the metrics in the state's evaluation history (curves, checkpoints)."""
    state.map.eval()
    try:
        m = evaluate(state.map, pair, n=n, cost=cfg.cost, device=state.device, full=full)
    finally:
        state.map.train()
    state.evals.append({"step": state.step, **m})
    return m


def _finish(state, cfg, pair, out: RunFolder | None, t0, status, message, metrics) -> Result:
    res = Result(cfg, pair, status, message, state.step, metrics, state.history, state.map, state.critic,
                 time.perf_counter() - t0, dict(state.precision), list(state.evals))
    if out is not None:
        out.finish(res, state.device)
    return res
