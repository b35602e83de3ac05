"""Bundles: K configurations trained together behave as K solo runs, members end independently, resume."""

import json
import math

import pytest
import torch

import otsr
from otsr.checkpoint import load_checkpoint
from otsr.cli import main
from otsr.pairs import ConvexMixture, GaussianShift
from otsr.recipes import resolve_members
from otsr.testing import TINY, tiny_config


def _members(pair, method, **lists):
    base = {**TINY, "method": method, "steps": 30, "eval_every": 15, "final_eval_samples": 2048}
    if method == "gan":
        base["critic_steps"] = 2
    return resolve_members(pair, {**base, **lists})


@pytest.mark.parametrize("method,lists", [
    ("gan", {"lam": [0.1, 1.0, 4.0, 1.0], "gp": [10.0, 10.0, 5.0, 10.0], "lr_map": [1e-4, 3e-4, 1e-4, 2e-4],
             "seed": [0, 0, 1, 2]}),
    ("ots", {"lr_map": [1e-4, 3e-4, 1e-4, 2e-4], "lr_critic": [1e-4, 1e-4, 3e-4, 1e-4], "seed": [0, 1, 1, 2]}),
])
def test_bundle_of_four_matches_four_solo_runs(method, lists):
    """Member k starts where its solo run starts and draws the same samples: final L2-UVP within 2 % relative."""
    pair = ConvexMixture(dim=4)
    members = _members(pair, method, **lists)
    bundle = otsr.train_bundle(members, pair)
    for cfg, res in zip(members, bundle):
        solo = otsr.train(cfg, pair)
        assert res.status == solo.status == "completed"
        assert res.config == cfg
        assert res.metrics["l2_uvp"] == pytest.approx(solo.metrics["l2_uvp"], rel=0.02)
        assert [h["step"] for h in res.history] == [h["step"] for h in solo.history]


def test_a_diverging_member_is_frozen_and_the_others_finish(tmp_path):
    """The diverged member leaves the bundle at the next readout; the healthy ones did not notice."""
    pair = GaussianShift(dim=4)
    members = _members(pair, "gan", lam=[1.0, 1.0, 1.0], lr_critic=[1e-4, 1e30, 1e-4], beta1=0.0)
    results = otsr.train_bundle(members, pair, out_dirs=[tmp_path / str(i) for i in range(3)])
    assert [r.status for r in results] == ["completed", "diverged", "completed"]
    assert results[1].message.startswith("diverged at step") and results[1].metrics == {}
    assert not (tmp_path / "1" / "metrics.json").exists()
    assert json.loads((tmp_path / "1" / "result.json").read_text())["status"] == "diverged"
    assert all(math.isfinite(v) for r in (results[0], results[2]) for v in r.metrics.values())
    solo = otsr.train(members[2], pair)  # the healthy members did not notice
    assert results[2].metrics["l2_uvp"] == pytest.approx(solo.metrics["l2_uvp"], rel=0.02)


def test_a_member_stopped_by_the_report_keeps_its_last_evaluation():
    pair = GaussianShift(dim=4)
    members = _members(pair, "gan", lam=[0.1, 10.0])
    seen = []

    def report(progress):
        seen.append([(p.member, p.step, p.final) for p in progress])
        return [1] if progress[0].step == 15 else None

    results = otsr.train_bundle(members, pair, report=report)
    assert [r.status for r in results] == ["completed", "stopped"]
    assert results[1].step == 15 and results[1].message == "stopped early at step 15"
    assert results[1].metrics["l2_uvp"] == results[1].evals[-1]["l2_uvp"]
    assert seen == [[(0, 15, False), (1, 15, False)], [(0, 30, True)]]


def _stopping(at: int, which: list[int], sizes: list | None = None, crash_at: int | None = None):
    """A report callback that stops members ``which`` at step ``at``, records the state's size at each report (the
    bundled map each Progress views) and raises at ``crash_at``."""

    def report(progress):
        if sizes is not None:
            sizes.append((progress[0].step, progress[0].map.net.k))
        if progress[0].step == crash_at:
            raise _Crash
        return which if progress[0].step == at else None

    return report


class _Crash(Exception):
    pass


@pytest.mark.parametrize("map_ema", [0.0, 0.9], ids=["iterate", "averaged"])
def test_members_stopped_early_leave_the_bundle_and_the_others_train_on_unchanged(map_ema):
    """After two of four members stop at step 15 the bundle trains 2 members, and the survivors end exactly where
    they end when nobody stops (their samples, weights, optimiser and average carried over)."""
    pair = GaussianShift(dim=4)
    members = _members(pair, "gan", lam=[0.5, 1.0, 2.0, 4.0], seed=[0, 1, 0, 2], steps=45, map_ema=map_ema)
    full = otsr.train_bundle(members, pair)
    sizes = []
    cut = otsr.train_bundle(members, pair, report=_stopping(15, [1, 3], sizes))
    assert sizes == [(15, 4), (30, 2), (45, 2)]
    assert [r.status for r in cut] == ["completed", "stopped", "completed", "stopped"]
    assert [r.step for r in cut] == [45, 15, 45, 15]
    for i in (0, 2):
        assert cut[i].metrics == full[i].metrics and cut[i].history == full[i].history
        for x, y in zip(cut[i].map.state_dict().values(), full[i].map.state_dict().values()):
            assert torch.equal(x, y)
    assert cut[1].metrics["l2_uvp"] == cut[1].evals[-1]["l2_uvp"] == full[1].evals[1]["l2_uvp"]


@pytest.mark.parametrize("cut,map_ema", [(1, 0.0), (0, 0.9)], ids=["middle", "first-averaged"])
def test_a_bundle_that_dropped_members_resumes_exactly(tmp_path, cut, map_ema):
    """A member that left the bundle keeps the checkpoint of the step it ended at; the resumed bundle holds only
    the others and finishes as the uninterrupted run does (its step, optimiser count, sample streams and weight
    average taken from a member at the bundle's step, whichever checkpoint comes first)."""
    pair = GaussianShift(dim=4)
    members = _members(pair, "gan", lam=[0.5, 1.0, 2.0], seed=[0, 1, 2], steps=45, checkpoint_every=15,
                       map_ema=map_ema)
    full = otsr.train_bundle(members, pair, report=_stopping(15, [cut]))
    folders = [tmp_path / str(i) for i in range(3)]
    with pytest.raises(_Crash):
        otsr.train_bundle(members, pair, report=_stopping(15, [cut], crash_at=30), out_dirs=folders)
    assert [load_checkpoint(f)["step"] for f in folders] == [15 if i == cut else 30 for i in range(3)]
    assert load_checkpoint(folders[cut])["status"] == "stopped"
    sizes = []
    resumed = otsr.train_bundle(members, pair, resume=folders, out_dirs=folders, report=_stopping(-1, [], sizes))
    assert sizes == [(45, 2)]
    assert [r.status for r in resumed] == ["stopped" if i == cut else "completed" for i in range(3)]
    assert resumed[cut].step == 15 and resumed[cut].metrics == full[cut].metrics
    for a, b in zip(full, resumed):
        assert a.metrics == b.metrics and a.history == b.history


def test_a_member_that_left_after_the_last_checkpoint_does_not_block_the_resume(tmp_path):
    """Stopped at step 20, between checkpoints at 15 and 30, a member's last checkpoint is *ahead* of the others';
    the resume goes on from the others' step and ends as the uninterrupted run does."""
    pair = GaussianShift(dim=4)
    members = _members(pair, "gan", lam=[0.5, 1.0, 2.0], seed=[0, 1, 2], steps=45, eval_every=5, checkpoint_every=15)
    full = otsr.train_bundle(members, pair, report=_stopping(20, [1]))
    folders = [tmp_path / str(i) for i in range(3)]
    with pytest.raises(_Crash):
        otsr.train_bundle(members, pair, report=_stopping(20, [1], crash_at=25), out_dirs=folders)
    assert [load_checkpoint(f)["step"] for f in folders] == [15, 20, 15]
    resumed = otsr.train_bundle(members, pair, resume=folders, out_dirs=folders)
    assert [(r.status, r.step) for r in resumed] == [("completed", 45), ("stopped", 20), ("completed", 45)]
    for a, b in zip(full, resumed):
        assert a.metrics == b.metrics and a.history == b.history


def test_the_last_members_to_stop_write_their_stopped_checkpoint(tmp_path):
    """When the last members of a bundle stop there is no smaller bundle to build, but their checkpoints still say
    stopped: a resume does not train them on."""
    pair = GaussianShift(dim=4)
    members = _members(pair, "gan", lam=[0.5, 1.0, 2.0], seed=[0, 1, 2], steps=45)
    folders = [tmp_path / str(i) for i in range(3)]

    def report(progress):
        return {15: [0, 1], 30: [2]}.get(progress[0].step)

    first = otsr.train_bundle(members, pair, report=report, out_dirs=folders)
    assert [(r.status, r.step) for r in first] == [("stopped", 15), ("stopped", 15), ("stopped", 30)]
    assert [(load_checkpoint(f)["status"], load_checkpoint(f)["step"]) for f in folders] == \
        [("stopped", 15), ("stopped", 15), ("stopped", 30)]
    resumed = otsr.train_bundle(members, pair, resume=folders, out_dirs=folders)
    assert [(r.status, r.step) for r in resumed] == [("stopped", 15), ("stopped", 15), ("stopped", 30)]
    assert [r.metrics for r in resumed] == [r.metrics for r in first]


@pytest.mark.parametrize("lists,match", [({"lam": [1.0, 2.0], "width": [8, 16]}, "config key 'width'"),
                                         ({"lam": [1.0, 2.0, 3.0], "seed": [0, 1]}, "equal lengths"),
                                         ({"lam": [], "seed": 0}, "empty list")])
def test_bundles_that_mix_shapes_or_lengths_are_rejected(lists, match):
    with pytest.raises(ValueError, match=match):
        _members(GaussianShift(dim=4), "gan", **lists)


def test_ots_bundles_refuse_lambda():
    with pytest.raises(ValueError, match="'ots' has no lambda"):
        _members(GaussianShift(dim=4), "ots", lam=[0.0, 1.0])


@pytest.mark.parametrize("map_ema,grad_clip", [(0.0, 0.0), (0.9, 0.0), (0.0, 1.0)],
                         ids=["iterate", "averaged", "clipped"])
def test_bundle_resumes_exactly_from_member_checkpoints(tmp_path, map_ema, grad_clip):
    pair = GaussianShift(dim=4)
    members = _members(pair, "gan", lam=[0.5, 2.0], seed=[0, 1], steps=40, checkpoint_every=20, eval_every=20,
                       map_ema=map_ema, grad_clip=grad_clip)
    full = otsr.train_bundle(members, pair)
    folders = [tmp_path / "a", tmp_path / "b"]

    class Stop(Exception):
        pass

    def crash(progress):
        if progress[0].step == 20:
            raise Stop

    with pytest.raises(Stop):
        otsr.train_bundle(members, pair, report=crash, out_dirs=folders)
    assert all(load_checkpoint(f)["step"] == 20 for f in folders)
    assert all(json.loads(load_checkpoint(f)["evals"])[-1]["step"] == 20 for f in folders)  # eval before save
    resumed = otsr.train_bundle(members, pair, resume=folders, out_dirs=folders)
    for a, b in zip(full, resumed):
        assert a.metrics == b.metrics and a.history == b.history
        for x, y in zip(a.map.state_dict().values(), b.map.state_dict().values()):
            assert torch.equal(x, y)
    solo = otsr.train(members[1].replace(), pair, resume=folders[1])  # a member folder resumes alone too
    assert solo.status == "completed" and solo.step == 40


def test_cli_bundle_writes_one_run_folder_per_member_and_resumes(tmp_path, capsys):
    out = tmp_path / "lams"
    args = ["train", "--pair", "gaussian-shift", "--dim", "4", "--method", "gan", "--lam", "0.1,1,10",
            "--steps", "20", "--eval-every", "10", "--batch-size", "32", "--width", "16", "--critic-steps", "2",
            "--final-eval-samples", "256", "--eval-samples", "256", "--checkpoint-every", "10", "--out", str(out)]
    assert main(args) == 0
    names = json.loads((out / "bundle.json").read_text())["members"]
    assert names == ["lam=0.1", "lam=1", "lam=10"]
    for name in names:
        assert (out / name / "metrics.json").exists() and (out / name / "map.png").exists()
        assert json.loads((out / name / "config.json").read_text())["train"]["lam"] == float(name.split("=")[1])
    text = capsys.readouterr()
    assert text.out.count("completed at step 20") == 3
    assert "step     10  lam=0.1" in text.err  # one line per member at each evaluation
    assert main(["train", "--resume", str(out), "--steps", "30"]) == 0
    assert all(load_checkpoint(out / n)["step"] == 30 for n in names)
    assert "resuming from step 20 of 30" in capsys.readouterr().err


def test_tiny_config_trains_a_bundle_of_one_like_train():
    pair = GaussianShift(dim=4)
    cfg = tiny_config("ots")
    a = otsr.train(cfg, pair)
    (b,) = otsr.train_bundle([cfg], pair)
    assert a.metrics == b.metrics
