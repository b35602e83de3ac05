"""The training state of a bundle: members draw from their own seeds' generators (shared when seeds agree),
per-member settings as tensors, checkpoints in the solo layout."""

import torch

from otsr import TrainConfig
from otsr.pairs import make_pair
from otsr.state import build_state

TINY = dict(batch_size=8, width=8, critic_width=8, depth=1, device="cpu", method="gan")


def test_members_with_one_seed_share_draws_and_other_seeds_differ():
    pair = make_pair("gaussian-shift", dim=3)
    s = build_state([TrainConfig(**TINY, seed=0, lam=1.0), TrainConfig(**TINY, seed=0, lam=2.0),
                     TrainConfig(**TINY, seed=5, lam=3.0)], pair)
    x = s.sample_p()
    assert x.shape == (3, 8, 3)
    assert torch.equal(x[0], x[1]) and not torch.equal(x[0], x[2])
    solo = build_state(TrainConfig(**TINY, seed=5, lam=3.0), pair)
    assert torch.equal(solo.sample_p()[0], x[2])  # member 2 draws what its solo run draws
    assert s.member_values("lam").tolist() == [1.0, 2.0, 3.0]


def test_member_checkpoints_round_trip_into_a_new_bundle():
    pair = make_pair("gaussian-shift", dim=3)
    members = [TrainConfig(**TINY, seed=s, lam=1.0) for s in (0, 1)]
    a = build_state(members, pair)
    a.method.step(a)
    a.step = 1
    ckpts = [a.member_checkpoint(i) for i in range(2)]
    b = build_state(members, pair)
    b.load_members(ckpts)
    for x, y in zip(a.map.state_dict().values(), b.map.state_dict().values()):
        assert torch.equal(x, y)
    assert b.step == 1 and torch.equal(a.sample_p(), b.sample_p())  # generators restored too
