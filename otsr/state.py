"""Everything a training step mutates and a checkpoint restores: models, optimisers, the sample generator, the
step counter and the loss history; built from a config and a pair, on the resolved device and precision."""

from __future__ import annotations

import dataclasses
import gc
import json
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from otsr.config import TrainConfig
from otsr.costs import cost as named_cost
from otsr.evaluation import draw_q, var_q
from otsr.models import build_critic, build_map, default_models, default_width
from otsr.pairs import Pair
from otsr.runtime import autocast_dtype, resolve_device, resolve_precision
from otsr.warm_start import FIT_SEED, MAX_WARM_DIM, GaussianFit, fit_gaussians


@dataclasses.dataclass
class TrainState:
    """Everything a step mutates and a checkpoint must restore."""

    map: nn.Module
    critic: nn.Module
    opt_map: torch.optim.Optimizer
    opt_critic: torch.optim.Optimizer
    generator: torch.Generator  # every training sample and random number comes from here
    device: torch.device
    content_cost: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # per-sample c(x, T(x))
    precision: dict[str, str]  # resolved per network: {"map": "fp32", "critic": "bf16"}
    step: int = 0
    history: list = dataclasses.field(default_factory=list)  # mean losses at each readout
    evals: list = dataclasses.field(default_factory=list)  # {"step", **metrics} at each evaluation
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

    def to_checkpoint(self, cfg: TrainConfig, pair: Pair) -> dict[str, Any]:
        """A checkpoint: resolved config, pair spec and sample shapes, weights, optimisers, RNG, step, history."""
        return {"config": cfg.to_dict(), "pair": pair.spec().to_dict(),
                "shapes": {"p": list(pair.shape), "q": list(pair.shape_q)}, "precision": dict(self.precision),
                "step": self.step, "map": self.map.state_dict(), "critic": self.critic.state_dict(),
                "opt_map": self.opt_map.state_dict(), "opt_critic": self.opt_critic.state_dict(),
                "generator": self.generator.get_state(), "history": json.dumps(self.history),
                "evals": json.dumps(self.evals)}

    def load(self, ckpt: dict[str, Any]) -> None:
        """Restore a ``to_checkpoint`` dict into a freshly built state."""
        self.map.load_state_dict(ckpt["map"])
        self.critic.load_state_dict(ckpt["critic"])
        self.opt_map.load_state_dict(ckpt["opt_map"])
        self.opt_critic.load_state_dict(ckpt["opt_critic"])
        self.generator.set_state(ckpt["generator"].cpu())
        self.step = int(ckpt["step"])
        self.history = json.loads(ckpt["history"])
        self.evals = json.loads(ckpt.get("evals", "[]"))


def model_names(cfg: TrainConfig, shape: tuple[int, ...], shape_q: tuple[int, ...]) -> tuple[str, str]:
    """The (map, critic) network names a config resolves to for these sample shapes."""
    map_name, critic_name = default_models(shape, shape_q)
    return (map_name if cfg.map_model == "auto" else cfg.map_model,
            critic_name if cfg.critic_model == "auto" else cfg.critic_model)


def wants_warm_start(cfg: TrainConfig, shape: tuple[int, ...], shape_q: tuple[int, ...]) -> bool:
    """Whether the map starts at the Bures map: 'auto' does for OTS on vector pairs up to MAX_WARM_DIM coordinates.

    The GAN starts at the identity under 'auto', where its content cost pulls it and GAN practice starts it:
    started at the Bures map (the unbiased side) it overshoots its equilibrium (lambda = 32 on gaussian-shift:
    shift 0.24 after 1000 steps against s_GP = 0.296, which it reaches from the identity).
    """
    vector = len(shape) == 1 and tuple(shape) == tuple(shape_q) and shape[0] <= MAX_WARM_DIM
    if cfg.warm_start == "bures" and not vector:
        raise ValueError(f"config key 'warm_start': 'bures' needs vector samples of at most {MAX_WARM_DIM} "
                         f"coordinates, not {tuple(shape)} -> {tuple(shape_q)}")
    return vector and (cfg.warm_start == "bures" or (cfg.warm_start == "auto" and cfg.method == "ots"))


def build_models(cfg: TrainConfig, shape: tuple[int, ...], shape_q: tuple[int, ...], fit: GaussianFit | None = None,
                 image_stats: tuple[float, float] | None = None) -> tuple[nn.Module, nn.Module]:
    """(map, critic) for samples P of ``shape`` and Q of ``shape_q``, seeded by ``cfg.seed``, on the CPU.

    ``fit`` gives vector networks their scales and warm start; without it they get placeholders of the right
    shapes (what loading a checkpoint needs, since the buffers are in its state dicts).
    """
    shape, shape_q = tuple(shape), tuple(shape_q)
    map_name, critic_name = model_names(cfg, shape, shape_q)
    if fit is None and len(shape) == 1 and shape == shape_q:
        fit = GaussianFit.identity(shape[0])
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(cfg.seed)
        t = build_map(map_name, shape, cfg.width or default_width(map_name, shape), cfg.depth, shape_q, fit=fit)
        f = build_critic(critic_name, shape_q, cfg.critic_width or default_width(critic_name, shape_q), cfg.depth,
                         method=cfg.method, cost=cfg.cost, fit=fit, image_stats=image_stats)
    return t, f


def image_stats(pair: Pair, n: int = 256) -> tuple[float, float]:
    """Mean and standard deviation over all pixels of ``n`` samples of Q (the potential's input scale)."""
    g = torch.Generator().manual_seed(FIT_SEED)
    y = draw_q(pair, n, g).double()
    return float(y.mean()), math.sqrt(var_q(pair) / math.prod(pair.shape_q))


def build_content_cost(cfg: TrainConfig, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-sample content cost c(x, T(x)): the named cost, plus ``perceptual_weight`` times a VGG feature MSE."""
    if not cfg.perceptual_weight:
        return lambda x, tx: named_cost(cfg.cost, x, tx)
    from otsr.sr.perceptual import PerceptualCost  # only runs that ask for VGG need torchvision's VGG

    vgg = PerceptualCost(cfg.perceptual_weights).to(device)
    return lambda x, tx: named_cost(cfg.cost, x, tx) + cfg.perceptual_weight * vgg(x, tx)


def _adam(params, lr: float, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    fused = {"fused": True} if device.type == "cuda" and not cfg.reference_habits else {}  # one kernel per step
    return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2), **fused)


def build_state(cfg: TrainConfig, pair: Pair, fit: GaussianFit | None = None) -> TrainState:
    """Models (seeded init, warm start, precision), optimisers and the training generator on the device."""
    device = resolve_device(cfg.device)
    shape, shape_q = tuple(pair.shape), tuple(pair.shape_q)
    if fit is None and len(shape) == 1 and shape == shape_q:
        fit = fit_gaussians(pair, wants_warm_start(cfg, shape, shape_q), device=device)
    else:
        wants_warm_start(cfg, shape, shape_q)  # rejects 'bures' for image pairs
    stats = None if fit is not None else image_stats(pair)
    t, f = (m.to(device) for m in build_models(cfg, shape, shape_q, fit, stats))
    names = model_names(cfg, shape, shape_q)
    precision = {role: resolve_precision(cfg.precision, name, device, cfg.reference_habits)
                 for role, name in zip(("map", "critic"), names)}
    t.dtype, f.dtype = autocast_dtype(precision["map"]), autocast_dtype(precision["critic"])
    if cfg.channels_last and len(shape) == 3 and device.type == "cuda" and not cfg.reference_habits:
        t, f = t.to(memory_format=torch.channels_last), f.to(memory_format=torch.channels_last)
    fwd_map, fwd_critic = t, f
    if cfg.compile:
        fwd_map = torch.compile(t)
        fwd_critic = f if cfg.method == "gan" else torch.compile(f)  # double backward is not compilable
    return TrainState(map=t, critic=f, opt_map=_adam(t.parameters(), cfg.lr_map, cfg, device),
                      opt_critic=_adam(f.parameters(), cfg.lr_critic, cfg, device),
                      generator=torch.Generator(device=device).manual_seed(cfg.seed), device=device,
                      content_cost=build_content_cost(cfg, device), precision=precision,
                      fwd_map=fwd_map, fwd_critic=fwd_critic, reference_habits=cfg.reference_habits)

