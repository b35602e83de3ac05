"""The map's weight average (``map_ema``): its arithmetic, the swap evaluations use, and member checkpoints."""

import pytest
import torch

import otsr
from otsr.averaging import MapAverage
from otsr.config import TrainConfig
from otsr.pairs import GaussianShift
from otsr.state import build_state


def _net(k=2):
    net = torch.nn.Linear(3, 4 * k)  # stands in for a bundled net: parameters member-major along dim 0
    net.k = k
    return net


def test_the_average_follows_the_warmed_up_decay_and_swaps_in_only_inside_the_block():
    net = _net()
    avg = MapAverage(net, 2, decay=0.9)
    start = net.weight.detach().clone()
    expected = start.clone()
    for t in range(30):
        with torch.no_grad():
            net.weight.add_(1.0)
        avg.update()
        rate = 1 - min(0.9, (1 + t) / (10 + t))
        expected = expected + rate * (net.weight.detach() - expected)
    iterate = net.weight.detach().clone()
    assert torch.allclose(avg.avg[0], expected, atol=1e-5)
    assert not torch.allclose(expected, iterate)  # the average lags the iterate
    with avg.applied():
        assert torch.allclose(net.weight, expected, atol=1e-5)
    assert torch.equal(net.weight, iterate)
    avg.commit()
    assert torch.allclose(net.weight, expected, atol=1e-5)
    with avg.applied():  # committed: the map holds the result, and the block changes nothing
        assert torch.allclose(net.weight, expected, atol=1e-5)


def test_member_averages_round_trip_through_their_checkpoints_and_a_missing_one_restarts_at_the_weights():
    net = _net()
    avg = MapAverage(net, 2, decay=0.5)
    with torch.no_grad():
        net.weight.mul_(3.0)
    avg.update()
    states = [avg.member_state(0), avg.member_state(1)]
    assert states[0]["weight"].shape == (4, 3)
    other = MapAverage(net, 2, decay=0.5)
    other.load_members(states)
    assert torch.equal(other.avg[0], avg.avg[0])
    other.load_members([states[0], None])
    assert torch.equal(other.avg[0][4:], net.weight.detach()[4:])  # member 1 restarts at its weights
    assert torch.equal(other.avg[0][:4], avg.avg[0][:4])


def test_a_run_with_an_average_returns_it_and_its_checkpoint_keeps_both(tmp_path):
    pair = GaussianShift(dim=4)
    cfg = TrainConfig(method="ots", steps=30, batch_size=64, map_steps=2, width=16, critic_width=16, eval_every=10,
                      eval_samples=256, final_eval_samples=256, checkpoint_every=10, device="cpu", map_ema=0.9,
                      keep_best=False)
    res = otsr.train(cfg, pair, out_dir=tmp_path)
    plain = otsr.train(cfg.replace(map_ema=0.0), pair)
    ckpt = otsr.checkpoint.load_checkpoint(tmp_path)
    got = res.map.net.state_dict()
    for name, value in ckpt["map_ema"].items():  # the result is the average
        assert torch.equal(got[name], value)
    assert any(not torch.equal(got[n], v) for n, v in plain.map.net.state_dict().items() if n in ckpt["map_ema"])
    assert res.metrics["l2_uvp"] != plain.metrics["l2_uvp"]
    state = build_state(cfg, pair)
    assert state.average is not None and build_state(cfg.replace(map_ema=0.0), pair).average is None


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_map_ema_outside_zero_to_one_is_refused_by_name(value):
    with pytest.raises(ValueError, match="map_ema"):
        TrainConfig(map_ema=value)
