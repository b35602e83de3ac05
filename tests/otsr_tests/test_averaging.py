"""The map's weight average (``map_ema``): its arithmetic, the swap evaluations use, and member checkpoints."""

import pytest
import torch

import otsr
from otsr.averaging import MapAverage
from otsr.config import TrainConfig
from otsr.models import member_state
from otsr.pairs import GaussianShift
from otsr.state import build_state


def _net(k=2):
    net = torch.nn.Linear(3, 4 * k)  # stands in for a bundled net: parameters member-major along dim 0
    net.k = k
    return net


def test_the_average_follows_the_warmed_up_decay_and_swaps_in_only_inside_the_block():
    net = _net()
    avg = MapAverage(net, 2, decay=0.9)
    expected = net.weight.detach().clone()
    for t in range(30):
        with torch.no_grad():
            net.weight.add_(1.0)
        avg.update()
        rate = 1 - min(0.9, (1 + t) / (10 + t))
        expected = expected + rate * (net.weight.detach() - expected)
    iterate = net.weight.detach().clone()
    assert torch.allclose(avg.average_state(0)["weight"], expected[:4], atol=1e-5)
    assert not torch.allclose(expected, iterate)  # the average lags the iterate
    with avg.applied():
        assert torch.allclose(net.weight, expected, atol=1e-5)
        assert torch.equal(avg.iterate_state(1)["weight"], iterate[4:])  # both stay reachable while swapped
    assert torch.equal(net.weight, iterate)
    avg.commit()
    assert torch.allclose(net.weight, expected, atol=1e-5) and torch.equal(avg.iterate_state(0)["weight"], iterate[:4])
    with avg.applied():  # committed: the map holds the average for good, and the block changes nothing
        assert torch.allclose(net.weight, expected, atol=1e-5)
    with pytest.raises(RuntimeError, match="iterate"):
        avg.update()


def test_a_frozen_members_average_stays_where_it_was():
    net = _net()
    avg = MapAverage(net, 2, decay=0.5)
    with torch.no_grad():
        net.weight.add_(1.0)
    before = avg.average_state(1)["weight"]
    avg.update(torch.tensor([True, False]))
    assert torch.equal(avg.average_state(1)["weight"], before)
    assert not torch.equal(avg.average_state(0)["weight"], _net().weight[:4])


def test_member_averages_round_trip_through_their_checkpoints_and_a_missing_one_restarts_at_the_weights():
    net = _net()
    avg = MapAverage(net, 2, decay=0.5)
    with torch.no_grad():
        net.weight.mul_(3.0)
    avg.update()
    states = [avg.average_state(0), avg.average_state(1)]
    assert states[0]["weight"].shape == (4, 3)
    other = MapAverage(net, 2, decay=0.5)
    other.load_members(states)
    assert torch.equal(other.average_state(0)["weight"], states[0]["weight"])
    other.load_members([states[0], None])
    assert torch.equal(other.average_state(1)["weight"], net.weight.detach()[4:])  # restarts at its weights


def _cfg(**kw):
    return TrainConfig(**{"method": "ots", "steps": 30, "batch_size": 64, "map_steps": 2, "width": 16,
                          "critic_width": 16, "eval_every": 10, "eval_samples": 256, "final_eval_samples": 256,
                          "checkpoint_every": 10, "device": "cpu", "map_ema": 0.9, "keep_best": False, **kw})


def test_a_run_with_an_average_returns_it_and_its_checkpoint_keeps_both(tmp_path):
    pair = GaussianShift(dim=4)
    res = otsr.train(_cfg(), pair, out_dir=tmp_path)
    plain = otsr.train(_cfg(map_ema=0.0), pair)
    ckpt = otsr.checkpoint.load_checkpoint(tmp_path)
    got, trained = res.map.net.state_dict(), plain.map.net.state_dict()
    assert all(torch.equal(got[name], value) for name, value in ckpt["map"].items())  # the result is "map"
    assert all(torch.equal(trained[name], value) for name, value in ckpt["map_iterate"].items())  # same training
    assert any(not torch.equal(ckpt["map"][n], ckpt["map_iterate"][n]) for n in ckpt["map"])
    assert res.metrics["l2_uvp"] != plain.metrics["l2_uvp"]
    assert build_state(_cfg(), pair).average is not None and build_state(_cfg(map_ema=0.0), pair).average is None


def test_a_completed_run_continued_with_more_steps_trains_on_as_if_never_stopped(tmp_path):
    pair = GaussianShift(dim=4)
    straight = otsr.train(_cfg(steps=40), pair)
    otsr.train(_cfg(steps=20), pair, out_dir=tmp_path)
    continued = otsr.train(_cfg(steps=40), pair, resume=tmp_path, out_dir=tmp_path)
    for a, b in zip(straight.map.net.state_dict().values(), continued.map.net.state_dict().values()):
        assert torch.equal(a, b)


def test_callbacks_and_a_stopped_member_see_the_average(tmp_path):
    pair = GaussianShift(dim=4)
    members = [_cfg(steps=40, seed=0), _cfg(steps=40, seed=1)]
    state_at_stop = {}

    def capture(progress):  # stops member 0 at step 20, keeping the weights its callback was shown
        if progress[0].step == 20:
            state_at_stop.update(member_state(progress[0].map.net, 0))
            return [0]
        return []

    results = otsr.train_bundle(members, pair, report=capture, out_dirs=[tmp_path / "a", tmp_path / "b"])
    assert results[0].status == "stopped" and results[1].status == "completed"
    ckpt = otsr.checkpoint.load_checkpoint(tmp_path / "a")
    got = results[0].map.net.state_dict()
    for name, value in ckpt["map"].items():  # the stopped member's result, its checkpoint and the callback agree
        assert torch.equal(got[name], value) and torch.equal(state_at_stop[name], value)
    assert any(not torch.equal(ckpt["map"][n], ckpt["map_iterate"][n]) for n in ckpt["map"])


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_map_ema_outside_zero_to_one_is_refused_by_name(value):
    with pytest.raises(ValueError, match="map_ema"):
        TrainConfig(map_ema=value)
