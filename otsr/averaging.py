"""An exponential moving average of the map's weights (config ``map_ema``): max-min training leaves the map's
iterate jittering around the saddle point; with an average on, evaluations, report callbacks, the T*-free
selection and the result see the average, while the updates keep training the iterate.

The decay warms up as min(decay, (1 + t) / (10 + t)) after t updates, so early averages do not drag the start
along; frozen members (stopped, diverged) keep their average. Weights are bundled (member-major along dim 0).
The network holds the iterate while training, and the average inside ``applied()`` and after ``commit()``; the
other one waits in this object's buffers, so checkpoints can always store both (``average_state``,
``iterate_state``) and a resumed or continued run trains on exactly the weights it left.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class MapAverage:
    """The running average of a (bundled) map's parameters; ``applied()`` swaps it in for a block."""

    def __init__(self, net: nn.Module, k: int, decay: float):
        self.decay, self.updates, self.k = decay, 0, k
        self.swapped = False  # whether the network holds the average (and ``other`` the iterate)
        named = list(net.named_parameters())
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.other = [p.detach().clone() for p in self.params]

    def rate(self) -> float:
        """The weight of the newest iterate at the next update."""
        t = self.updates
        return 1.0 - min(self.decay, (1.0 + t) / (10.0 + t))

    @torch.no_grad()
    def update(self, active: torch.Tensor | None = None) -> None:
        """Fold the current iterate into the average of the ``active`` members (K,) bool (all when None)."""
        if self.swapped:
            raise RuntimeError("the map holds its average: training updates need the iterate")
        rate = self.rate()
        if active is None or bool(active.all()):
            torch._foreach_lerp_(self.other, [p.detach() for p in self.params], rate)
        else:
            w = active.to(self.other[0].dtype)[:, None] * rate
            for a, p in zip(self.other, self.params):
                a.view(self.k, -1).lerp_(p.detach().view(self.k, -1), w)
        self.updates += 1

    @torch.no_grad()
    def _swap(self) -> None:
        for p, a in zip(self.params, self.other):
            tmp = p.detach().clone()
            p.copy_(a)
            a.copy_(tmp)
        self.swapped = not self.swapped

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The map holds the average inside the block and its iterate again after it (after ``commit`` the map
        holds the average for good, and the block changes nothing)."""
        if self.swapped:
            yield
            return
        self._swap()
        try:
            yield
        finally:
            self._swap()

    def commit(self) -> None:
        """The end of training: the map holds the average from now on (the result); the iterate is kept here."""
        if not self.swapped:
            self._swap()

    def _member(self, tensors: list[torch.Tensor], index: int) -> dict[str, torch.Tensor]:
        out = {}
        for name, t in zip(self.names, tensors):
            n = t.shape[0] // self.k
            out[name] = t[index * n:(index + 1) * n].detach().clone()
        return out

    def average_state(self, index: int) -> dict[str, torch.Tensor]:
        """Member ``index``'s averaged parameters in the one-member layout."""
        return self._member(self.params if self.swapped else self.other, index)

    def iterate_state(self, index: int) -> dict[str, torch.Tensor]:
        """Member ``index``'s trained (iterate) parameters in the one-member layout."""
        return self._member(self.other if self.swapped else self.params, index)

    @torch.no_grad()
    def load_members(self, states: list[dict[str, torch.Tensor] | None]) -> None:
        """Set the averages from the members' averaged parameters (the network holds the loaded iterate); a member
        with None (a checkpoint written without an average) restarts its average at its loaded weights."""
        if self.swapped:
            raise RuntimeError("load averages while the map holds its iterate")
        for j, (name, p) in enumerate(zip(self.names, self.params)):
            n = p.shape[0] // self.k
            parts = [s[name].to(p.device, p.dtype) if s is not None else p.detach()[i * n:(i + 1) * n]
                     for i, s in enumerate(states)]
            self.other[j].copy_(torch.cat(parts))
