"""MemberAdam: K members' stacked parameters updated exactly as K separate Adams, each with its own rate."""

import torch

from otsr.optim import MemberAdam


def test_member_adam_equals_separate_torch_adams():
    torch.manual_seed(0)
    k, lrs = 3, [1e-3, 5e-3, 2e-2]
    stacked = torch.nn.Parameter(torch.randn(k, 4, 2))
    solo = [torch.nn.Parameter(stacked[i:i + 1].detach().clone()) for i in range(k)]
    opt = MemberAdam([("w", stacked)], k, lrs, betas=(0.0, 0.9))
    refs = [torch.optim.Adam([p], lr=lr, betas=(0.0, 0.9)) for p, lr in zip(solo, lrs)]
    for step in range(5):
        target = torch.randn(k, 4, 2, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        ((stacked - target) ** 2).sum().backward()
        opt.step()
        for i, (p, ref) in enumerate(zip(solo, refs)):
            ref.zero_grad()
            ((p - target[i:i + 1]) ** 2).sum().backward()
            ref.step()
    for i, p in enumerate(solo):
        assert torch.allclose(stacked[i:i + 1], p, atol=1e-6)


def test_frozen_members_do_not_move_and_state_round_trips():
    p = torch.nn.Parameter(torch.ones(2, 3))
    opt = MemberAdam([("w", p)], 2, [0.1, 0.1], betas=(0.0, 0.9))
    opt.set_lr(1.0, active=torch.tensor([True, False]))
    p.sum().backward()
    opt.step()
    assert torch.all(p[0] < 1) and torch.equal(p[1], torch.ones(3))
    twin = MemberAdam([("w", torch.nn.Parameter(p.detach().clone()))], 2, [0.1, 0.1], betas=(0.0, 0.9))
    twin.load_members([opt.member_state(0), opt.member_state(1)])
    assert twin.t == 1 and torch.equal(twin.v[0], opt.v[0])
