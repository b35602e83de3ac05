"""The loop skeleton shared by both trainers: setup, sync points (losses, divergence, evaluation,
checkpoints), resume and outputs. The adversarial updates themselves live in ``ots.py`` and ``gan.py``."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from otsr.checkpoint import atomic_write_json, load_checkpoint, save_checkpoint
from otsr.config import TrainConfig
from otsr.evaluation import evaluate
from otsr.models import build_critic, build_map, default_models, default_width
from otsr.pairs import Pair, make_pair, validate_pair
from otsr.plots import map_figure, save_png

LOSS_NAMES = ("critic", "map")  # which loss a divergence is blamed on, in the order outer steps return them


@dataclasses.dataclass
class Progress:
    """What a report callback receives at each evaluation (and once more, ``final``, at the end)."""

    step: int
    metrics: dict[str, float]
    final: bool
    save_checkpoint: Callable[[Path], Path]  # writes a resumable checkpoint into a folder
    map: nn.Module  # the map being trained (read-only use: figures, extra metrics)


@dataclasses.dataclass
class Result:
    """Outcome of ``train``: the learned map, its final metrics, the loss history, and the status."""

    config: TrainConfig
    pair: Pair
    status: str  # 'completed' or 'diverged'
    message: str  # e.g. "diverged at step 41 in the critic loss"
    step: int  # outer steps done
    metrics: dict[str, float]
    history: list[dict[str, float]]
    map: nn.Module
    critic: nn.Module
    seconds: float

    @property
    def diverged(self) -> bool:
        """Whether a non-finite loss stopped the run."""
        return self.status == "diverged"

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (status, step, metrics, wall time)."""
        notes = self.pair.metric_notes() if hasattr(self.pair, "metric_notes") else {}
        return {"status": self.status, "message": self.message, "step": self.step, "metrics": self.metrics,
                "seconds": round(self.seconds, 3), "method": self.config.method, "unavailable": notes}


@dataclasses.dataclass
class TrainState:
    """Everything a step mutates and a checkpoint must restore."""

    map: nn.Module
    critic: nn.Module
    opt_map: torch.optim.Optimizer
    opt_critic: torch.optim.Optimizer
    generator: torch.Generator  # every training sample and random number comes from here
    device: torch.device
    step: int = 0
    history: list = dataclasses.field(default_factory=list)
    fwd_map: Callable | None = None  # what the steps call: the map itself, or its torch.compile'd twin
    fwd_critic: Callable | None = None  # likewise for the potential (never compiled for a GP critic)
    reference_habits: bool = False

    def after_update(self, loss: torch.Tensor) -> None:
        """Hook after every optimiser step: nothing in a lean loop; the published loops' habits otherwise."""
        if self.reference_habits:
            loss.item()  # host sync
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; other names are passed to torch (errors name the device)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"config key 'device': {name!r} requested but CUDA is not available")
    return dev


def _adam(params, lr: float, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    fused = {"fused": True} if device.type == "cuda" and not cfg.reference_habits else {}  # one kernel per step
    return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2), **fused)


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 when asked for (or 'auto' on CUDA), None for plain fp32; reference habits are always fp32."""
    if cfg.reference_habits or cfg.precision == "fp32" or (cfg.precision == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def autocast(cfg: TrainConfig, device: torch.device):
    """The mixed-precision context of a config on a device (a no-op context for fp32)."""
    dtype = autocast_dtype(cfg, device)
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def build_models(cfg: TrainConfig, shape: tuple[int, ...], shape_q: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    """(map, critic) for samples P of ``shape`` and Q of ``shape_q``, seeded by ``cfg.seed``, on the CPU."""
    map_name, critic_name = default_models(shape, shape_q)
    map_name = map_name if cfg.map_model == "auto" else cfg.map_model
    critic_name = critic_name if cfg.critic_model == "auto" else cfg.critic_model
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(cfg.seed)
        t = build_map(map_name, shape, cfg.width or default_width(map_name), cfg.depth, shape_q)
        f = build_critic(critic_name, shape_q, cfg.width or default_width(critic_name), cfg.depth)
    return t, f


def build_state(cfg: TrainConfig, pair: Pair) -> TrainState:
    """Models (seeded init), optimisers and the training generator on the resolved device."""
    device = resolve_device(cfg.device)
    shape = tuple(pair.shape)
    t, f = (m.to(device) for m in build_models(cfg, shape, tuple(pair.shape_q)))
    if cfg.channels_last and len(shape) == 3 and device.type == "cuda" and not cfg.reference_habits:
        t, f = t.to(memory_format=torch.channels_last), f.to(memory_format=torch.channels_last)
    fwd_map, fwd_critic = t, f
    if cfg.compile:
        fwd_map = torch.compile(t)
        fwd_critic = f if cfg.method == "gan" else torch.compile(f)  # double backward is not compilable
    return TrainState(map=t, critic=f, opt_map=_adam(t.parameters(), cfg.lr_map, cfg, device),
                      opt_critic=_adam(f.parameters(), cfg.lr_critic, cfg, device),
                      generator=torch.Generator(device=device).manual_seed(cfg.seed), device=device,
                      fwd_map=fwd_map, fwd_critic=fwd_critic, reference_habits=cfg.reference_habits)


def state_dict(state: TrainState, cfg: TrainConfig, pair: Pair) -> dict[str, Any]:
    """A checkpoint: resolved config, pair identity, weights, optimisers, RNG, step and history."""
    return {"config": cfg.to_dict(), "pair": {"name": pair.name, "params": pair.params()},
            "step": state.step, "map": state.map.state_dict(), "critic": state.critic.state_dict(),
            "opt_map": state.opt_map.state_dict(), "opt_critic": state.opt_critic.state_dict(),
            "generator": state.generator.get_state(), "history": json.dumps(state.history)}


def load_state(state: TrainState, ckpt: dict[str, Any]) -> None:
    """Restore a ``state_dict`` checkpoint into a freshly built state."""
    state.map.load_state_dict(ckpt["map"])
    state.critic.load_state_dict(ckpt["critic"])
    state.opt_map.load_state_dict(ckpt["opt_map"])
    state.opt_critic.load_state_dict(ckpt["opt_critic"])
    state.generator.set_state(ckpt["generator"].cpu())
    state.step = int(ckpt["step"])
    state.history = json.loads(ckpt["history"])


def pair_from_checkpoint(ckpt: dict[str, Any]) -> Pair:
    """Rebuild the pair a checkpoint was trained on (registered pairs only)."""
    return make_pair(ckpt["pair"]["name"], **ckpt["pair"]["params"])


OuterStep = Callable[[TrainState, TrainConfig, Pair], torch.Tensor]


def run(cfg: TrainConfig, pair: Pair, outer_step: OuterStep, *, report: Callable[[Progress], None] | None = None,
        resume: dict[str, Any] | Path | str | None = None, out_dir: Path | str | None = None,
        on_log: Callable[[int, dict[str, float]], None] | None = None) -> Result:
    """Train with ``outer_step`` (returns the step's [critic loss, map loss] as one device tensor).

    Host syncs happen only every ``log_every`` steps and at evaluations. A non-finite loss ends the run
    as ``diverged`` at the first bad step; no metrics.json is written for it.
    """
    validate_pair(pair)
    state = build_state(cfg, pair)
    if resume is not None:
        ckpt = resume if isinstance(resume, dict) else load_checkpoint(resume, map_location=state.device)
        load_state(state, ckpt)
    out = _prepare_out_dir(out_dir, cfg, pair)
    t0 = time.perf_counter()
    acc = torch.zeros(2, device=state.device)
    first_bad = torch.full((2,), math.inf, device=state.device)
    n_acc = 0

    def save(folder: Path) -> Path:
        return save_checkpoint(state_dict(state, cfg, pair), Path(folder))

    precision = autocast(cfg, state.device)
    while state.step < cfg.steps:
        _set_lr(state, cfg)
        with precision:
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
            save(out)
        if is_eval and s < cfg.steps and report is not None:
            m = _evaluate(state, cfg, pair, cfg.eval_samples, full=False)
            report(Progress(s, {**m, **_last_losses(state)}, False, save, state.map))
    metrics = _evaluate(state, cfg, pair, cfg.final_eval_samples, full=True)
    if out is not None:
        save(out)
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
    state.map.eval()
    try:
        return evaluate(state.map, pair, n=n, cost=cfg.cost, device=state.device, full=full)
    finally:
        state.map.train()


def _prepare_out_dir(out_dir, cfg: TrainConfig, pair: Pair) -> Path | None:
    if out_dir is None:
        return None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").unlink(missing_ok=True)  # a stale metrics.json must not mark this run complete
    atomic_write_json(out / "config.json", {"train": cfg.to_dict(), "pair": {"name": pair.name,
                                                                             "params": pair.params()}})
    return out


def _finish(state, cfg, pair, out, t0, status, message, metrics) -> Result:
    res = Result(cfg, pair, status, message, state.step, metrics, state.history, state.map, state.critic,
                 time.perf_counter() - t0)
    if out is not None:
        atomic_write_json(out / "result.json", res.summary())
        if status == "completed":
            state.map.eval()
            save_png(map_figure(state.map, pair, state.device), out / "map.png")
            atomic_write_json(out / "metrics.json", metrics)  # written last: marks the folder complete
    return res
