"""Which state a run returns, chosen without T*: the latest evaluated state whose bias is within the noise of the
best bias seen, so a map that falls apart late (max-min solvers oscillate) is not what the user gets.

The signal is the pair's headline bias (``Pair.headline``) of T#P to Q on the periodic evaluation's fixed
held-out samples (computable on real data, SR included); the tolerance is the larger of ``REL_TOL`` times the
best value and the bias's noise at that sample size (its spread over redrawn samples of Q, ``noise_spread``), so
a converging run keeps its last state and only a clear regression reverts. Not the floor's level (the bias of
two independent samples of Q): every state shares that offset, and as a tolerance it kept a 5.5 % state over a
3.6 % one at D = 64 (README "OTS at scale"). Each member of a bundle is judged on its own.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

REL_TOL = 0.1  # a later state is kept when its bias is within 10 % (or the noise) of the best


def member_snapshot(net: nn.Module, k: int, index: int) -> dict[str, torch.Tensor]:
    """A copy of member ``index``'s parameters of a K-member network (parameters are member-major)."""
    return {name: p.detach().view(k, -1)[index].clone() for name, p in net.named_parameters()}


@torch.no_grad()
def restore_member(net: nn.Module, k: int, index: int, snapshot: dict[str, torch.Tensor]) -> None:
    """Write a ``member_snapshot`` back into member ``index`` of ``net``."""
    for name, p in net.named_parameters():
        p.view(k, -1)[index].copy_(snapshot[name])


@dataclasses.dataclass
class MemberSelection:
    """The selection state of one member: the best bias seen, the kept step and its weights."""

    noise: float = 0.0
    best: float = math.inf
    step: int = -1
    value: float = math.nan
    snapshot: dict[str, torch.Tensor] | None = None

    def tolerance(self, best: float | None = None) -> float:
        """How far above ``best`` (default: the best seen) a state may be and still be kept."""
        return max(REL_TOL * (self.best if best is None else best), self.noise)

    def acceptable(self, value: float) -> bool:
        """Whether a state with this bias is within tolerance of the best (counting itself)."""
        best = min(self.best, value)
        return math.isfinite(value) and value <= best + self.tolerance(best)

    def observe(self, step: int, value: float, snapshot) -> None:
        """A periodic evaluation: keep this state (``snapshot()`` copies it) when acceptable."""
        if not math.isfinite(value):
            return
        if self.acceptable(value):
            self.step, self.value, self.snapshot = step, value, snapshot()
        self.best = min(self.best, value)

    def reason(self, end_step: int, end_value: float, signal: str) -> str:
        """Why the kept state was kept, for the run's message."""
        return (f"kept the state of step {self.step} ({signal} {self.value:.4g}): the end state's {end_value:.4g} "
                f"exceeds the best {self.best:.4g} by more than {self.tolerance():.3g} (T*-free selection)")
