"""An exponential moving average of the map's weights (config ``map_ema``): max-min training leaves the map's
iterate jittering around the saddle point; with an average on, evaluations, the T*-free selection and the result
see the average, while the updates keep training the iterate.

The decay warms up as min(decay, (1 + t) / (10 + t)) after t updates, so early averages do not drag the start
along. Weights are bundled (member-major along dim 0), so one fused lerp updates every member at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class MapAverage:
    """The running average of a (bundled) map's parameters; ``applied()`` swaps it in for a block."""

    def __init__(self, net: nn.Module, k: int, decay: float):
        self.decay, self.updates, self.k, self.committed = decay, 0, k, False
        named = list(net.named_parameters())
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.avg = [p.detach().clone() for p in self.params]

    def rate(self) -> float:
        """The weight of the newest iterate at the next update."""
        t = self.updates
        return 1.0 - min(self.decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current iterate into the average (after an outer step)."""
        torch._foreach_lerp_(self.avg, [p.detach() for p in self.params], self.rate())
        self.updates += 1

    @torch.no_grad()
    def _swap(self) -> None:
        for p, a in zip(self.params, self.avg):
            tmp = p.detach().clone()
            p.copy_(a)
            a.copy_(tmp)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The map holds the average inside the block and its iterate again after it (after ``commit`` the map
        holds the result, and the block changes nothing)."""
        if self.committed:
            yield
            return
        self._swap()
        try:
            yield
        finally:
            self._swap()

    @torch.no_grad()
    def commit(self) -> None:
        """Make the average the map's weights for good (the end of training: the result is the average)."""
        if not self.committed:
            for p, a in zip(self.params, self.avg):
                p.copy_(a)
        self.committed = True

    def member_state(self, index: int) -> dict[str, torch.Tensor]:
        """Member ``index``'s average in the one-member layout (for its checkpoint)."""
        out = {}
        for name, a in zip(self.names, self.params if self.committed else self.avg):
            n = a.shape[0] // self.k
            out[name] = a[index * n:(index + 1) * n].detach().clone()
        return out

    @torch.no_grad()
    def load_members(self, states: list[dict[str, torch.Tensor] | None]) -> None:
        """Restore from the members' checkpoints; a member whose checkpoint has no average (written without one)
        restarts its average at its loaded weights."""
        for j, (name, p) in enumerate(zip(self.names, self.params)):
            n = p.shape[0] // self.k
            parts = [s[name].to(p.device, p.dtype) if s is not None else p.detach()[i * n:(i + 1) * n]
                     for i, s in enumerate(states)]
            self.avg[j].copy_(torch.cat(parts))
