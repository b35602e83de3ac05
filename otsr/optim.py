"""Adam for bundles: K members' stacked parameters, one learning rate per member.

Adam is element-wise, so member k's update is exactly the update a separate Adam on member k's weights would
make, as long as nothing couples members: gradient-norm clipping (``clip``) is per member, as a solo run's would
be. Every parameter of a bundled network is laid out member-major along its first dimension, so ``p.view(K, -1)``
puts one member per row.
"""

from __future__ import annotations

import torch
from torch import nn


class MemberAdam:
    """Adam (no weight decay) over named stacked parameters, with per-member learning rates ``lr`` (K,).

    ``clip`` > 0 caps each member's gradient norm at ``clip`` times the running mean of its (capped) norms, so a
    spike cannot throw a max-min game, at any scale of the loss (config ``grad_clip``)."""

    NORM_DECAY = 0.99  # running mean of the gradient norm: about the last 100 updates

    def __init__(self, named_params: list[tuple[str, nn.Parameter]], k: int, lrs: list[float],
                 betas: tuple[float, float], eps: float = 1e-8, clip: float = 0.0):
        self.names = [n for n, _ in named_params]
        self.params = [p for _, p in named_params]
        self.k, self.betas, self.eps = k, betas, eps
        device = self.params[0].device
        self.base_lr = torch.tensor(lrs, dtype=torch.float32, device=device)
        self.lr = self.base_lr.clone()  # the learning rates of the next update (schedule and freezing applied)
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0
        self.clip = clip
        self.norm_mean: torch.Tensor | None = None  # (K,) running mean of the capped gradient norms (clip > 0)
        self.clipped = torch.zeros(k, device=self.base_lr.device)  # per member: updates whose gradient was capped

    def set_lr(self, factor: float, active: torch.Tensor | None = None) -> None:
        """Next update's rates: base * ``factor`` for active members, 0 for frozen ones (``active`` (K,) bool)."""
        lr = self.base_lr * factor
        self.lr = lr if active is None else torch.where(active, lr, torch.zeros_like(lr))

    def zero_grad(self) -> None:
        """Drop the gradients."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of every member with its own learning rate."""
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):
            keep = [i for i, g in enumerate(grads) if g is not None]
            params, ms, vs, grads = ([seq[i] for i in keep] for seq in (self.params, self.m, self.v, grads))
        else:
            params, ms, vs = self.params, self.m, self.v
        if not params:
            return
        if self.clip > 0:
            self._clip(grads)
        self.t += 1
        b1, b2 = self.betas
        torch._foreach_mul_(ms, b1)
        torch._foreach_add_(ms, grads, alpha=1 - b1)
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)
        denom = torch._foreach_div(vs, 1 - b2**self.t)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, self.eps)
        updates = torch._foreach_div(ms, denom)
        rate = (self.lr / (1 - b1**self.t))[:, None]
        for p, u in zip(params, updates):
            p.view(self.k, -1).sub_(rate * u.view(self.k, -1))

    def _clip(self, grads: list[torch.Tensor]) -> None:
        """Scale each member's gradients (in place) so its norm is at most ``clip`` x its running mean norm."""
        norm = torch.stack([g.reshape(self.k, -1).float().pow(2).sum(1) for g in grads]).sum(0).sqrt()
        if self.norm_mean is None:
            self.norm_mean = torch.zeros_like(norm)
        # a member whose gradients were all zero so far (OTS starts at the potential's best response: the map's first
        # gradient is 0) has no scale to cap against; its mean starts at its first non-zero norm
        mean = torch.where(self.norm_mean == 0, norm, self.norm_mean)
        scale = torch.clamp(self.clip * mean / norm.clamp_min(torch.finfo(norm.dtype).tiny), max=1.0)
        scale = torch.where(torch.isfinite(scale), scale, torch.ones_like(scale))  # 0/0 or a diverged member
        for g in grads:  # splitting the first dimension is a view in any memory format
            g.unflatten(0, (self.k, -1)).mul_(scale.to(g.dtype).view(-1, *[1] * g.dim()))
        self.norm_mean.copy_(mean * self.NORM_DECAY + norm * scale * (1 - self.NORM_DECAY))
        self.clipped += scale < 1  # no host sync

    def member_state(self, index: int) -> dict:
        """Member ``index``'s optimiser state in the one-member layout (what a solo checkpoint holds)."""
        def cut(t: torch.Tensor) -> torch.Tensor:
            n = t.shape[0] // self.k
            return t[index * n:(index + 1) * n].detach().clone()

        state = {"t": self.t, "m": {n: cut(m) for n, m in zip(self.names, self.m)},
                 "v": {n: cut(v) for n, v in zip(self.names, self.v)}}
        if self.norm_mean is not None:
            state["norm_mean"] = float(self.norm_mean[index])
        return state

    def load_members(self, states: list[dict], t: int | None = None) -> None:
        """Restore from one state per member (``member_state`` dicts, in member order); ``t``, the bundle's update
        count, when some member's state is older (a member that ended earlier)."""
        steps = {int(s["t"]) for s in states}
        if t is None and len(steps) != 1:
            raise ValueError(f"members' optimisers are at different steps {sorted(steps)}; a bundle moves together")
        self.t = t if t is not None else steps.pop()
        for i, name in enumerate(self.names):
            self.m[i].copy_(torch.cat([s["m"][name] for s in states]).to(self.m[i].device))
            self.v[i].copy_(torch.cat([s["v"][name] for s in states]).to(self.v[i].device))
        means = [s.get("norm_mean") for s in states]  # absent: saved without clipping (the mean restarts)
        self.norm_mean = None if None in means else torch.tensor(means, device=self.base_lr.device)
