"""The T*-free selection rule: a planted late blow-up returns the pre-blow-up state; a converging run keeps its end."""

import math
import re

import torch

from otsr import TrainConfig, make_pair, train
from otsr.selection import MemberSelection, member_snapshot, restore_member
from otsr.state import TrainState


def test_member_selection_keeps_latest_within_tolerance():
    sel = MemberSelection(noise=0.05)
    for step, v in [(100, 1.0), (200, 0.5), (300, 0.52), (400, 3.0)]:
        sel.observe(step, v, lambda step=step: {"step": torch.tensor(step)})
    assert sel.step == 300 and sel.best == 0.5  # 0.52 is within max(10 %, noise) of 0.5; 3.0 is not
    assert not sel.acceptable(3.0) and sel.acceptable(0.54) and not sel.acceptable(math.nan)


def test_snapshot_round_trip_touches_one_member():
    net = torch.nn.Linear(3, 2)
    net.weight.data = torch.arange(6.0).reshape(2, 3)  # as a K = 2 stack: rows are members
    snap = member_snapshot(net, 2, 1)
    net.weight.data.zero_()
    restore_member(net, 2, 1, snap)
    assert net.weight.data[0].abs().sum() == 0 and torch.equal(net.weight.data[1], torch.tensor([3.0, 4.0, 5.0]))


def _run(monkeypatch, spike: bool):
    pair = make_pair("gaussian-shift", dim=4)
    cfg = TrainConfig(method="ots", steps=200, eval_every=25, eval_samples=512, final_eval_samples=1024,
                      batch_size=128, lr_map=1e-3, lr_critic=1e-3, map_steps=2, width=16, critic_width=16,
                      depth=2, device="cpu", log_every=25)
    if spike:  # at 95 % of the run the map's weights are thrown far off (what a late blow-up does to them)
        original = TrainState.set_lr

        def set_lr(self, factor):
            if self.step == 190:
                with torch.no_grad():
                    for p in self.map.parameters():
                        p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
            original(self, factor)

        monkeypatch.setattr(TrainState, "set_lr", set_lr)
    return train(cfg, pair)


def test_planted_blow_up_returns_pre_spike_state(monkeypatch):
    res = _run(monkeypatch, spike=True)
    curve = {e["step"]: e for e in res.evals}  # periodic points, then the final evaluation of the returned state
    found = re.search(r"kept the state of step (\d+) \(bias_\w+ ([\d.e+-]+)\): the end state's ([\d.e+-]+) exceeds "
                      r"the best ([\d.e+-]+)", res.message)
    assert found, res.message
    kept_step, end_value, best = int(found[1]), float(found[3]), float(found[4])
    assert end_value > 2 * best  # the plant did blow the map up
    assert 100 <= kept_step <= 175 and res.metrics["selected_step"] == kept_step
    assert res.metrics["l2_uvp"] < 1.5 * curve[kept_step]["l2_uvp"] + 1.0  # the returned map is the kept one


def test_converging_run_keeps_its_end(monkeypatch):
    res = _run(monkeypatch, spike=False)
    assert res.metrics["selected_step"] == 200 and "kept the state" not in res.message
