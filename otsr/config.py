"""Trainer configuration: one frozen dataclass, a comment per default, validated on construction."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from otsr.costs import COSTS
from otsr.methods import METHODS, check_count, check_number, comment_help, get_method, owner

LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")
WARM_STARTS = ("auto", "bures", "identity")
MAP_MODELS = ("resmlp", "mlp", "unet", "edsr")
CRITIC_MODELS = ("mlp", "resnet", "icnn")
CHOICES = {"method": tuple(METHODS), "cost": COSTS, "lr_schedule": LR_SCHEDULES, "precision": PRECISIONS,
           "warm_start": WARM_STARTS, "map_model": ("auto", *MAP_MODELS), "critic_model": ("auto", *CRITIC_MODELS)}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to solve: method, budget, optimiser and evaluation settings (the pair says *what* to solve).

    Each method's own settings (``lam``, ``gp``, ``critic_steps`` for the GAN; ``map_steps``, ``potential_gain``,
    ``potential_contrast`` for OTS) are owned by its settings dataclass (``Method.Settings``: defaults, help,
    validation, what may vary in a bundle); they stay flat keys here so configs, checkpoints and MLflow params
    keep one shape.

    Defaults follow the reference setups of the paper's published code (Gazdieva et al., arXiv 2202.01116):
    Adam(0, 0.9), lr 1e-4, 10 map steps per potential step (OTS) or 10 critic steps with gradient penalty 10
    (GAN), MSE cost. Vector and SR pairs get their own recipe on top (``otsr.recipes``).
    """

    method: str = "ots"  # 'ots' (max-min neural OT, no lambda) or 'gan' (WGAN-GP + lambda * content cost)
    steps: int = 2000  # outer steps: one potential (OTS) or one map (GAN) update each
    batch_size: int = 64  # samples of P and of Q per update
    cost: str = "mean"  # 'mean' = per-coordinate MSE (reference), 'sum' = ||x - y||^2
    lam: float = 0.0  # the GAN's (otsr.methods.gan.GANSettings)
    perceptual_weight: float = 0.0  # weight of the VGG feature part of the content cost (images only)
    perceptual_weights: str = ""  # local torchvision vgg19 weights file for that part (never downloaded)
    gp: float = 10.0  # the GAN's
    map_steps: int = 10  # OTS's (otsr.methods.ots.OTSSettings)
    potential_gain: float = 1.0  # OTS's
    potential_contrast: float = 0.0  # OTS's
    potential_batch: int = 0  # OTS's
    readout_steps: int = 0  # OTS's
    critic_steps: int = 10  # the GAN's
    lr_map: float = 1e-4  # Adam learning rate of the map T
    lr_critic: float = 1e-4  # Adam learning rate of the potential / critic
    beta1: float = 0.0  # Adam beta1 (0 as in WGAN-GP practice)
    beta2: float = 0.9  # Adam beta2
    lr_schedule: str = "constant"  # 'constant' or 'cosine' (both learning rates decay to 0 at the last step)
    map_model: str = "auto"  # 'resmlp' | 'mlp' | 'unet' | 'edsr' | 'auto' (resmlp vectors, unet images, edsr SR)
    critic_model: str = "auto"  # 'mlp' | 'resnet' | 'icnn' | 'auto' (mlp for vectors, resnet for images); 'icnn':
    # a convex OTS image potential, the map's problem convex in its output (opt-in, README "Images")
    width: int = 0  # map: ResMLP units / UNet base channels / EDSR features; 0 = 64-256 by D / 32 / 64
    critic_width: int = 0  # critic or potential: MLP units / ResNet or convex-potential channels; 0 = 128 / 32
    depth: int = 3  # ResMLP blocks and MLP hidden layers / UNet levels / EDSR residual blocks (a convex potential's
    # levels follow the image size)
    warm_start: str = "auto"  # 'bures' (start at the Gaussian OT map between Gaussian fits of P and Q), 'identity',
    # or 'auto': bures for OTS on vector pairs, identity for the GAN (where its content cost pulls it) and for
    # images ('bures' also fits same-shape images of <= 1024 values, flattened)
    seed: int = 0  # seeds model init and every sample drawn in training
    device: str = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...
    log_every: int = 100  # steps between loss readouts (the only host syncs besides eval)
    eval_every: int = 500  # steps between periodic evaluations (reported to the callback)
    eval_samples: int = 4096  # samples for periodic evaluation
    final_eval_samples: int = 16384  # samples for the final metrics (>= 2^14 as the W2 benchmark asks)
    checkpoint_every: int = 500  # steps between checkpoints when an output folder is given
    keep_best: bool = True  # return the latest evaluated state whose held-out bias is within noise of the best seen
    # (needs no T*; otsr.selection): a run that regresses late returns its pre-regression state
    map_ema: float = 0.0  # decay of an exponential moving average of the map's weights (0 = off; e.g. 0.99): with
    # it on, evaluations, the selection and the result use the average (otsr.averaging)
    grad_clip: float = 0.0  # > 0: cap each network's gradient norm at this multiple of its running mean (per
    # member; 0 = off; e.g. 2): a gradient spike cannot throw the max-min game (otsr.optim.MemberAdam)
    precision: str = "auto"  # network bodies: 'auto' (bf16 autocast for conv nets on CUDA, else fp32), 'fp32' or
    # 'bf16'; bases, potential values, costs and losses are fp32 always
    channels_last: bool = True  # channels_last memory format for image nets on CUDA (faster convolutions)
    compile: bool = False  # torch.compile the map (and the OTS potential; a GP critic needs double backward);
    # off by default: slower on CPU where measured (45.8 vs 63.5 steps/s, OTS MLP D=16)
    reference_habits: bool = False  # benchmarks only: fp32, .item() + gc.collect() + torch.cuda.empty_cache()
    # after every update, as the published loops do

    def __post_init__(self):
        method = get_method(self.method)  # unknown names raise listing the valid ones
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"config key 'lr_schedule': unknown {self.lr_schedule!r}; "
                             f"valid: {', '.join(LR_SCHEDULES)}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            raise ValueError(f"config key 'device': {self.device!r} is not supported (valid: auto, cpu, cuda, cuda:N)")
        for key, valid in (("map_model", MAP_MODELS), ("critic_model", CRITIC_MODELS)):
            if getattr(self, key) not in ("auto", *valid):
                raise ValueError(f"config key {key!r}: unknown model {getattr(self, key)!r}; valid: auto, "
                                 f"{', '.join(valid)}")
        if self.warm_start not in WARM_STARTS:
            raise ValueError(f"config key 'warm_start': unknown {self.warm_start!r}; valid: {', '.join(WARM_STARTS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"config key 'precision': unknown {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        for key in ("channels_last", "compile", "reference_habits", "keep_best"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"config key {key!r}: {getattr(self, key)!r} must be true or false")
        if self.cost not in COSTS:
            raise ValueError(f"unknown cost {self.cost!r}; valid costs: {', '.join(COSTS)}")
        if self.perceptual_weight and not self.perceptual_weights:
            raise ValueError("config key 'perceptual_weights': a VGG weights file is needed when "
                             f"perceptual_weight={self.perceptual_weight}")
        if self.perceptual_weight and self.critic_model == "icnn":
            raise ValueError(f"config key 'perceptual_weight'={self.perceptual_weight}: a convex potential "
                             "(critic_model 'icnn') keeps the map's problem convex for the pixel cost only; "
                             "leave it at 0")
        for key in ("perceptual_weight", "lr_map", "lr_critic", "beta1", "beta2", "map_ema", "grad_clip"):
            check_number(key, getattr(self, key))
        if self.grad_clip != 0 and self.grad_clip < 1:
            raise ValueError(f"config key 'grad_clip': {self.grad_clip} must be 0 (off) or >= 1 (a multiple of the "
                             "running mean gradient norm; below 1 every update would be shrunk)")
        if self.perceptual_weight < 0:
            raise ValueError(f"config key 'perceptual_weight': {self.perceptual_weight} must be >= 0")
        for key in ("lr_map", "lr_critic"):
            if getattr(self, key) <= 0:
                raise ValueError(f"config key {key!r}: {getattr(self, key)} must be > 0")
        for key in ("beta1", "beta2", "map_ema"):
            if not 0 <= getattr(self, key) < 1:
                raise ValueError(f"config key {key!r}: {getattr(self, key)} must be in [0, 1)")
        for key in ("steps", "batch_size", "depth", "log_every", "eval_every", "eval_samples", "final_eval_samples",
                    "checkpoint_every"):
            check_count(key, getattr(self, key))
        for key in ("width", "critic_width"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"config key {key!r}: {v!r} must be an integer >= 0")
        method.validate(self)  # its own settings by its settings dataclass; other methods' keys at their defaults

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys raise naming them and the valid keys."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid keys: {sorted(valid)}")
        return cls(**d)

    @classmethod
    def from_stored(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a stored config (config.json, a checkpoint), of this release or an earlier one: every method's
        knobs were stored flat, and releases before the methods owned their settings also kept another method's
        recipe values (the SR recipe's ``map_steps`` for a GAN run); a method never read them, so they load as
        their defaults."""
        return cls.from_dict(stored_config(d))

    def lr_factor(self, step: int) -> float:
        """Multiplier of the base learning rates for the update at outer step ``step`` (0-based)."""
        if self.lr_schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * step / self.steps))
        return 1.0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (for JSON, checkpoints and MLflow params)."""
        return dataclasses.asdict(self)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Each field's meaning (the CLI's help text): read from the comments beside the defaults above, and for a
        method's own settings from its settings dataclass."""
        out = comment_help(cls)
        for m in METHODS.values():
            if m.Settings is not None:
                out.update(comment_help(m.Settings))
        return out

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def stored_config(d: dict[str, Any]) -> dict[str, Any]:
    """A stored config dict as this release reads it: keys owned by a method other than its own at their defaults
    (see ``TrainConfig.from_stored``)."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    method = d.get("method", defaults["method"])
    out = dict(d)
    for k in d:
        m = owner(k)
        if m is not None and m.name != method and getattr(METHODS.get(method), "Settings", None) is not None:
            out[k] = defaults[k]
    return out


def check_bundle(members: list[TrainConfig]) -> None:
    """Members of one bundle share their method and every setting outside the method's ``bundle_fields``.

    Raises ValueError naming the first field that differs and its values.
    """
    if not members:
        raise ValueError("a bundle needs at least one member")
    first = members[0]
    method = get_method(first.method)
    for m in members[1:]:
        if m.method != first.method:
            raise ValueError(f"a bundle trains one method; members have method={first.method!r} and {m.method!r}")
        for f in dataclasses.fields(TrainConfig):
            a, b = getattr(first, f.name), getattr(m, f.name)
            if a != b and f.name not in method.bundle_fields:
                raise ValueError(f"config key {f.name!r}: members of a bundle must share it (got {a!r} and {b!r}); "
                                 f"what may differ for {first.method!r}: {', '.join(sorted(method.bundle_fields))}")
