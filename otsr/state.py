"""Everything a training step mutates and a checkpoint restores, for a bundle of K members (a solo run is K = 1):
stacked networks, per-member optimisers and settings, the sample generators, the step counter and each member's
loss and evaluation history; built from the members' configs and a pair, on the resolved device and precision.

Members draw their samples from a generator seeded by their own seed (members with the same seed share the
draws), and their networks start where a solo run with that seed starts, so member k trains exactly as its solo
run would, up to floating-point summation order.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from otsr.averaging import MapAverage
from otsr.checkpoint import load_checkpoint
from otsr.config import TrainConfig, check_bundle
from otsr.costs import cost as named_cost
from otsr.methods import Method, get_method
from otsr.models import build_critic, build_map, default_models, default_width, member_state
from otsr.optim import MemberAdam
from otsr.pairs import Pair, PairSpec
from otsr.runtime import autocast_dtype, resolve_device, resolve_precision
from otsr.sampling import draw_q, var_q
from otsr.warm_start import FIT_SEED, MAX_WARM_DIM, GaussianFit, fit_gaussians

CHECKPOINT_FORMAT = 2  # 2: bundled-layer weights in the one-member layout (otsr >= 0.3)
GOING_ON = ("running", "completed")  # checkpoint statuses of members a resumed bundle trains (a longer run continues)


def goes_on(ckpt: dict[str, Any]) -> bool:
    """Whether a resumed bundle trains this member on (not one that stopped or diverged early)."""
    return ckpt.get("status", "running") in GOING_ON


def bundle_lead(ckpts: list[dict[str, Any]]) -> dict[str, Any]:
    """The checkpoint a resumed bundle takes its step and optimiser count from: a member that goes on (the latest
    checkpoint when none does; members that ended early hold the step they left at)."""
    return max([c for c in ckpts if goes_on(c)] or ckpts, key=lambda c: int(c["step"]))


@dataclasses.dataclass
class TrainState:
    """Everything a step mutates and a checkpoint must restore (see the module docstring)."""

    cfg: TrainConfig  # the settings members share (member 0's config)
    members: list[TrainConfig]
    method: Method
    pair: Pair
    map: nn.Module
    critic: nn.Module
    opt_map: MemberAdam
    opt_critic: MemberAdam
    generators: dict[int, torch.Generator]  # one per distinct seed: every sample and random number comes from here
    device: torch.device
    cost_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # per-sample c(x, T(x)) on (N, ...) batches
    precision: dict[str, str]  # resolved per network: {"map": "fp32", "critic": "bf16"}
    step: int = 0
    history: list = dataclasses.field(default_factory=list)  # per member: mean losses at each readout
    evals: list = dataclasses.field(default_factory=list)  # per member: {"step", **metrics} at each evaluation
    fwd_map: Callable | None = None  # what the steps call: the map itself, or its torch.compile'd twin
    fwd_critic: Callable | None = None  # likewise for the potential (never compiled for a GP critic)
    reference_habits: bool = False
    active: torch.Tensor | None = None  # (K,) bool: members still training (diverged or stopped ones are frozen)
    fit: GaussianFit | None = None  # what the networks were built with (a member cut out is rebuilt the same way)
    image_stats: tuple[float, float] | None = None
    average: MapAverage | None = None  # the map's weight average when ``cfg.map_ema`` > 0 (otsr.averaging)

    def __post_init__(self):
        k = len(self.members)
        self.history = self.history or [[] for _ in range(k)]
        self.evals = self.evals or [[] for _ in range(k)]
        if self.active is None:
            self.active = torch.ones(k, dtype=torch.bool, device=self.device)
        self._seeds = [m.seed for m in self.members]
        if self.average is None and self.cfg.map_ema > 0:
            self.average = MapAverage(self.map, k, self.cfg.map_ema)
        self._values: dict[str, torch.Tensor] = {}

    @property
    def k(self) -> int:
        """Members in the bundle."""
        return len(self.members)

    # --- what method steps call ---

    def _per_member(self, draw: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
        """One draw per distinct seed, arranged (K, ...) in member order."""
        if len(self.generators) == 1:
            out = draw(next(iter(self.generators.values())))
            return out[None].expand(self.k, *out.shape)
        drawn = {seed: draw(g) for seed, g in self.generators.items()}
        return torch.stack([drawn[s] for s in self._seeds])

    def sample_p(self, n: int | None = None) -> torch.Tensor:
        """A training batch of P per member, (K, B, ...); B = ``n`` or the batch size."""
        return self._per_member(lambda g: self.pair.sample_p(n or self.cfg.batch_size, g))

    def sample_q(self, n: int | None = None) -> torch.Tensor:
        """A training batch of Q per member, (K, B, ...); B = ``n`` or the batch size."""
        return self._per_member(lambda g: self.pair.sample_q(n or self.cfg.batch_size, g))

    def uniform(self, batch: int, extra_dims: int) -> torch.Tensor:
        """U(0, 1) numbers (K, batch, 1, ..., 1) with ``extra_dims`` trailing ones, from the members' generators."""
        shape = (batch, *([1] * extra_dims))
        return self._per_member(lambda g: torch.rand(shape, generator=g, device=self.device))

    def member_values(self, name: str) -> torch.Tensor:
        """A numeric setting of every member (e.g. lambda, gp) as a (K,) fp32 device tensor."""
        if name not in self._values:
            self._values[name] = torch.tensor([float(getattr(m, name)) for m in self.members],
                                              dtype=torch.float32, device=self.device)
        return self._values[name]

    def any_positive(self, name: str) -> bool:
        """Whether some member's setting ``name`` is > 0 (skips work that every member multiplies by zero)."""
        return any(getattr(m, name) > 0 for m in self.members)

    def content_cost(self, x: torch.Tensor, tx: torch.Tensor) -> torch.Tensor:
        """Per-sample content cost c(x, T(x)) of member batches (K, B, ...) -> (K, B)."""
        k, b = tx.shape[:2]
        return self.cost_fn(x.reshape(k * b, *x.shape[2:]), tx.reshape(k * b, *tx.shape[2:])).reshape(k, b)

    def update(self, opt: MemberAdam, loss: torch.Tensor) -> None:
        """One optimiser step on the members' losses (K,): their sum, since members share no weights."""
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        if opt is self.opt_critic and hasattr(self.critic.net, "project"):  # a constrained class (convex potential)
            self.critic.net.project()
        if self.reference_habits:  # the published loops' habits (benchmarks only)
            loss.sum().item()  # host sync
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def set_lr(self, factor: float) -> None:
        """Learning rates of the next updates: the schedule's factor for active members, 0 for frozen ones."""
        for opt in (self.opt_map, self.opt_critic):
            opt.set_lr(factor, self.active)

    # --- checkpoints: one ordinary solo checkpoint per member ---

    def member_checkpoint(self, index: int, status: str = "running") -> dict[str, Any]:
        """Member ``index`` as a solo checkpoint: config, pair, shapes, weights, optimisers, RNG, step, history.

        With a weight average (``map_ema``), ``map`` holds the average (what evaluations scored and the result is)
        and ``map_iterate`` the trained weights a resumed run continues from."""
        pair = self.pair
        weights = {"map": member_state(self.map, index)}
        if self.average is not None:
            weights = {"map": weights["map"] | self.average.average_state(index),
                       "map_iterate": weights["map"] | self.average.iterate_state(index)}
        return weights | {"format": CHECKPOINT_FORMAT, "config": self.members[index].to_dict(),
                          "pair": pair.spec().to_dict(), "shapes": sample_shapes(pair),
                          "precision": dict(self.precision), "step": self.step, "status": status,
                          "critic": member_state(self.critic, index),
                          "opt_map": self.opt_map.member_state(index),
                          "opt_critic": self.opt_critic.member_state(index),
                          "generator": self.generators[self.members[index].seed].get_state(),
                          "history": json.dumps(self.history[index]), "evals": json.dumps(self.evals[index])}

    def load_members(self, ckpts: list[dict[str, Any]]) -> None:
        """Restore every member from its checkpoint (``member_checkpoint`` dicts, in member order). A member that
        ended early (status stopped or diverged) may be at another step: its checkpoint is the one it left with; the
        bundle's step, optimiser count and sample streams come from the members that go on."""
        if len(ckpts) != self.k:
            raise ValueError(f"{len(ckpts)} checkpoint(s) for a bundle of {self.k}")
        for c in ckpts:
            if c.get("format") != CHECKPOINT_FORMAT:
                raise ValueError("checkpoint was written by an older otsr (before bundles, format "
                                 f"{c.get('format', 1)}); its networks cannot be loaded: train a new run")
        steps = {int(c["step"]) for c in ckpts if goes_on(c)}
        if len(steps) > 1:
            raise ValueError(f"members' checkpoints are at different steps {sorted(steps)}; a bundle moves together "
                             "(only a member that ended early may be at another step)")
        lead = bundle_lead(ckpts)
        step = int(lead["step"])
        _load_stacked(self.map, [c.get("map_iterate", c["map"]) for c in ckpts], "map")  # the trained weights
        _load_stacked(self.critic, [c["critic"] for c in ckpts], "critic")
        if self.average is not None:
            self.average.load_members([c["map"] if "map_iterate" in c else None for c in ckpts])
            self.average.updates = step
        self.opt_map.load_members([c["opt_map"] for c in ckpts], t=int(lead["opt_map"]["t"]))
        self.opt_critic.load_members([c["opt_critic"] for c in ckpts], t=int(lead["opt_critic"]["t"]))
        for seed, g in self.generators.items():  # a seed's stream from a member that goes on, if it has one
            mine = [c for c, m in zip(ckpts, self.members) if m.seed == seed]
            g.set_state(next((c for c in mine if goes_on(c)), mine[0])["generator"].cpu())
        self.step = step
        self.history = [json.loads(c["history"]) for c in ckpts]
        self.evals = [json.loads(c.get("evals", "[]")) for c in ckpts]


def _load_stacked(net: nn.Module, states: list[dict[str, torch.Tensor]], what: str) -> None:
    params = {name for name, _ in net.named_parameters()}
    own = net.state_dict()
    merged = {}
    for key, value in own.items():
        if any(key not in s for s in states):
            raise ValueError(f"checkpoint's {what} network has no {key!r}: it was trained with other settings")
        merged[key] = torch.cat([s[key] for s in states]) if key in params else states[0][key]
        if merged[key].shape != value.shape:
            raise ValueError(f"checkpoint's {what} network has {key!r} of shape {tuple(merged[key].shape)}, this "
                             f"configuration builds {tuple(value.shape)}: it was trained with other settings")
    net.load_state_dict(merged)


def sample_shapes(pair: Pair) -> dict[str, list[int]]:
    """The sample shapes of a pair as stored in configs and checkpoints."""
    return {"p": list(pair.shape), "q": list(pair.shape_q)}


def model_names(cfg: TrainConfig, shape: tuple[int, ...], shape_q: tuple[int, ...]) -> tuple[str, str]:
    """The (map, critic) network names a config resolves to for these sample shapes."""
    map_name, critic_name = default_models(shape, shape_q)
    return (map_name if cfg.map_model == "auto" else cfg.map_model,
            critic_name if cfg.critic_model == "auto" else cfg.critic_model)


def resolved_widths(cfg: TrainConfig, shape: tuple[int, ...], shape_q: tuple[int, ...]) -> tuple[int, int]:
    """(map width, critic width) with 0 resolved to the defaults for these shapes."""
    map_name, critic_name = model_names(cfg, shape, shape_q)
    return (cfg.width or default_width(map_name, shape), cfg.critic_width or default_width(critic_name, shape_q))


def wants_warm_start(cfg: TrainConfig, shape: tuple[int, ...], shape_q: tuple[int, ...]) -> bool:
    """Whether the map starts at the Bures map: 'auto' does when the method's default is 'bures' (OTS) on vector
    pairs up to MAX_WARM_DIM coordinates.

    The GAN starts at the identity under 'auto', where its content cost pulls it and GAN practice starts it:
    started at the Bures map (the unbiased side) it overshoots its equilibrium (lambda = 32 on gaussian-shift:
    shift 0.24 after 1000 steps against s_GP = 0.296, which it reaches from the identity).
    """
    fits = tuple(shape) == tuple(shape_q) and math.prod(shape) <= MAX_WARM_DIM
    if cfg.warm_start == "bures" and not fits:
        raise ValueError(f"config key 'warm_start': 'bures' needs vector samples or same-shape images of at most "
                         f"{MAX_WARM_DIM} values, not {tuple(shape)} -> {tuple(shape_q)}")
    if len(shape) != 1:  # images: only on request (README "Images": measured on convex-images)
        return fits and cfg.warm_start == "bures"
    method_default = get_method(cfg.method).warm_start
    return fits and (cfg.warm_start == "bures" or (cfg.warm_start == "auto" and method_default == "bures"))


def build_networks(cfg: TrainConfig, shape: tuple[int, ...], shape_q: tuple[int, ...], fit: GaussianFit | None = None,
                   image_stats: tuple[float, float] | None = None, k: int = 1) -> tuple[nn.Module, nn.Module]:
    """(map, critic) for K members on the CPU, built from ``cfg``'s shared settings (weights: seeded by cfg.seed).

    ``fit`` gives vector networks their scales and warm start; without it they get placeholders of the right
    shapes (what loading a checkpoint needs, since the buffers are in its state dicts).
    """
    shape, shape_q = tuple(shape), tuple(shape_q)
    map_name, critic_name = model_names(cfg, shape, shape_q)
    width, critic_width = resolved_widths(cfg, shape, shape_q)
    if fit is None and len(shape) == 1 and shape == shape_q:
        fit = GaussianFit.identity(shape[0])
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(cfg.seed)
        t = build_map(map_name, shape, width, cfg.depth, shape_q, fit=fit, k=k)
        f = build_critic(critic_name, shape_q, critic_width, cfg.depth, potential=get_method(cfg.method)
                         .critic_is_potential, cost=cfg.cost, fit=fit, image_stats=image_stats, k=k,
                         gain=cfg.potential_gain, contrast=cfg.potential_contrast)
    return t, f


def build_models(cfg: TrainConfig, shape: tuple[int, ...], shape_q: tuple[int, ...], fit: GaussianFit | None = None,
                 image_stats: tuple[float, float] | None = None) -> tuple[nn.Module, nn.Module]:
    """One member's (map, critic), seeded by ``cfg.seed`` (see ``build_networks``)."""
    return build_networks(cfg, shape, shape_q, fit, image_stats, k=1)


def build_bundle_networks(members: list[TrainConfig], shape, shape_q, fit=None, image_stats=None):
    """(map, critic) of K members: each member built as its solo run would be (its own seed), then stacked."""
    k = len(members)
    solo = [build_networks(m, shape, shape_q, fit, image_stats, k=1) for m in members]
    if k == 1:
        return solo[0]
    t, f = build_networks(members[0], shape, shape_q, fit, image_stats, k=k)
    for net, idx in ((t, 0), (f, 1)):
        _load_stacked(net, [s[idx].state_dict() for s in solo], "member")
    return t, f


def image_stats(pair: Pair, n: int = 256) -> tuple[float, float]:
    """Mean and standard deviation over all pixels of ``n`` samples of Q (the potential's input scale)."""
    g = torch.Generator().manual_seed(FIT_SEED)
    y = draw_q(pair, n, g).double()
    return float(y.mean()), math.sqrt(var_q(pair) / math.prod(pair.shape_q))


def build_cost(cfg: TrainConfig, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-sample content cost c(x, T(x)): the named cost, plus ``perceptual_weight`` times a VGG feature MSE."""
    if not cfg.perceptual_weight:
        return lambda x, tx: named_cost(cfg.cost, x, tx)
    from otsr.perceptual import PerceptualCost  # only runs that ask for VGG need torchvision's VGG

    vgg = PerceptualCost(cfg.perceptual_weights).to(device)
    return lambda x, tx: named_cost(cfg.cost, x, tx) + cfg.perceptual_weight * vgg(x, tx)


def state_from_checkpoint(run, method: str | None = None) -> tuple[TrainConfig, Pair, TrainState, int]:
    """A finished run's config, pair, trained state on the CPU and step, from its folder or checkpoint file (what
    the diagnostic scripts read a run with); ``method`` refuses a run of another method by name."""
    ckpt = load_checkpoint(Path(run))
    cfg = TrainConfig.from_dict({**ckpt["config"], "device": "cpu"})
    if method is not None and cfg.method != method:
        raise ValueError(f"{run}: method {cfg.method!r}; this needs a {method} run")
    pair = PairSpec.from_dict(ckpt["pair"], f"checkpoint {run}: pair").build()
    state = build_state(cfg, pair)
    state.load_members([ckpt])
    return cfg, pair, state, int(ckpt["step"])


def build_state(members: TrainConfig | list[TrainConfig], pair: Pair, fit: GaussianFit | None = None) -> TrainState:
    """Networks (seeded per member, warm start, precision), optimisers and generators on the device."""
    members = [members] if isinstance(members, TrainConfig) else list(members)
    check_bundle(members)
    cfg, k = members[0], len(members)
    method = get_method(cfg.method)
    method.check_pair(cfg, pair)
    device = resolve_device(cfg.device)
    shape, shape_q = tuple(pair.shape), tuple(pair.shape_q)
    if fit is None and len(shape) == 1 and shape == shape_q:
        fit = fit_gaussians(pair, wants_warm_start(cfg, shape, shape_q), device=device)
    elif fit is None and wants_warm_start(cfg, shape, shape_q):  # (rejects 'bures' for pairs it cannot fit)
        fit = fit_gaussians(pair, True, device=device)  # an image pair started at the Bures map of its flat fits
    stats = image_stats(pair) if len(shape) != 1 else None
    t, f = (m.to(device) for m in build_bundle_networks(members, shape, shape_q, fit, stats))
    names = model_names(cfg, shape, shape_q)
    precision = {role: resolve_precision(cfg.precision, name, device, cfg.reference_habits)
                 for role, name in zip(("map", "critic"), names)}
    t.dtype, f.dtype = autocast_dtype(precision["map"]), autocast_dtype(precision["critic"])
    if cfg.channels_last and len(shape) == 3 and device.type == "cuda" and not cfg.reference_habits:
        t, f = t.to(memory_format=torch.channels_last), f.to(memory_format=torch.channels_last)
    fwd_map, fwd_critic = t, f
    if cfg.compile:
        fwd_map = torch.compile(t)
        fwd_critic = torch.compile(f) if method.critic_is_potential else f  # double backward is not compilable
    betas = (cfg.beta1, cfg.beta2)
    opt_map = MemberAdam(list(t.named_parameters()), k, [m.lr_map for m in members], betas, clip=cfg.grad_clip)
    # Adam's eps in the potential's own units: a potential's learned part is scaled by 2 kappa s_q^2 (~2e-5 for
    # the 1/2 MSE cost on 3x32x32 images), so its gradients are ~1e-7 and a fixed eps of 1e-8 would damp its updates
    opt_critic = MemberAdam(list(f.named_parameters()), k, [m.lr_critic for m in members], betas,
                            eps=1e-8 * min(1.0, float(f.scale)), clip=cfg.grad_clip)
    generators = {s: torch.Generator(device=device).manual_seed(s) for s in dict.fromkeys(m.seed for m in members)}
    return TrainState(cfg=cfg, members=members, method=method, pair=pair, map=t, critic=f, opt_map=opt_map,
                      opt_critic=opt_critic, generators=generators, device=device, cost_fn=build_cost(cfg, device),
                      precision=precision, fwd_map=fwd_map, fwd_critic=fwd_critic,
                      reference_habits=cfg.reference_habits, fit=fit, image_stats=stats)
