"""Shared test fixtures: a small user-written pair, tiny trainer configs and the trainer conformance suite.

Like ``optuna.testing``: every trainer (and any new one) goes through ``check_trainer_conformance``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch

from otsr.checkpoint import load_checkpoint
from otsr.config import TrainConfig
from otsr.methods import get_method
from otsr.pairs import Pair, PushforwardPair
from otsr.result import Result

TINY = dict(steps=20, batch_size=32, log_every=5, eval_every=10, eval_samples=256, final_eval_samples=512,
            checkpoint_every=10, device="cpu", width=32, depth=2)


def tiny_config(method: str, **overrides) -> TrainConfig:
    """A seconds-sized config of ``method`` (its ``Method.tiny`` settings: a lambda of 1 for the GAN)."""
    return TrainConfig(method=method, **{**TINY, **get_method(method).tiny, **overrides})


@dataclasses.dataclass(repr=False)
class LinearPair(Pair):
    """A user pair as a user would write it: P uniform on a cube, Q = 2 P + 1 (the OT map is x -> 2x + 1)."""

    name = "user-linear"
    dim: int = 2
    wrong_shape: bool = False  # a bug to catch: sample_p returns one coordinate too many

    @property
    def shape(self):
        """One sample is a ``(dim,)`` vector."""
        return (self.dim,)

    def sample_p(self, n, generator):
        """Uniform on [0, 1]^dim."""
        return torch.rand(n, self.dim + int(self.wrong_shape), generator=generator, device=generator.device)

    def sample_q(self, n, generator):
        """Uniform on [1, 3]^dim."""
        return 2 * torch.rand(n, self.dim, generator=generator, device=generator.device) + 1

    def sample_with_target(self, n, generator):
        """x and 2x + 1."""
        x = self.sample_p(n, generator)
        return x, 2 * x + 1

    def var_q(self):
        """dim * 4/12."""
        return self.dim * 4 / 12


@dataclasses.dataclass(repr=False)
class GradientPair(PushforwardPair):
    """A pair whose T* = grad psi of a small random network is computed with autograd (psi convex: a softplus
    sum plus 1/2 |x|^2), the case that once failed at the final evaluation under no_grad."""

    name = "user-gradient"
    dim: int = 3
    seed: int = 0

    def __post_init__(self):
        g = torch.Generator().manual_seed(self.seed)
        self.w = torch.randn(8, self.dim, generator=g)
        self.b = torch.randn(8, generator=g)

    @property
    def shape(self):
        """One sample is a ``(dim,)`` vector."""
        return (self.dim,)

    def sample_p(self, n, generator):
        """Standard normal."""
        return torch.randn(n, self.dim, generator=generator, device=generator.device)

    def true_map(self, x):
        """grad psi(x), psi(x) = 1/2 |x|^2 + sum softplus(W x + b), through autograd."""
        x = x.detach().requires_grad_(True)
        w, b = self.w.to(x.device), self.b.to(x.device)
        psi = 0.5 * x.pow(2).sum() + torch.nn.functional.softplus(x @ w.T + b).sum()
        return torch.autograd.grad(psi, x)[0]

    def closed_form_map(self, x):
        """The same grad psi written out, x + W^T sigmoid(W x + b): no autograd needed (for checking)."""
        w, b = self.w.to(x.device), self.b.to(x.device)
        return x + torch.sigmoid(x @ w.T + b) @ w

    def var_q(self):
        """Monte-Carlo estimate (fixed seed)."""
        y = self.sample_q(1 << 14, torch.Generator().manual_seed(self.seed + 1))
        return float(y.var(0).sum())


def check_trainer_conformance(train, method: str, pair: Pair, out_dir: Path) -> Result:
    """What every trainer promises: a Result, finite losses, reports at each evaluation and at the end, a
    checkpoint that round-trips, and a complete run folder."""
    reports = []
    res = train(tiny_config(method), pair, report=reports.append, out_dir=out_dir)
    assert isinstance(res, Result) and res.status == "completed" and res.step == TINY["steps"]
    names = [f"loss_{n}" for n in get_method(method).losses]
    assert res.history and all(set(h) == {"step", *names} for h in res.history)
    assert all(math.isfinite(h[n]) for h in res.history for n in names)
    assert [p.step for p in reports] == [10, 20] and reports[-1].final and not reports[0].final
    assert all(math.isfinite(v) for v in res.metrics.values())
    ckpt = load_checkpoint(out_dir)
    assert ckpt["step"] == TINY["steps"] and ckpt["config"]["method"] == method
    assert tuple(ckpt["shapes"]["p"]) == tuple(pair.shape)
    assert json.loads((out_dir / "metrics.json").read_text()) == res.metrics
    assert (out_dir / "map.png").stat().st_size > 100
    (out_dir / "cb").mkdir()
    assert load_checkpoint(reports[-1].save_checkpoint(out_dir / "cb"))["step"] == TINY["steps"]
    return res
