"""Methods as registered objects: what the loop, the console and MLflow know of a method is its declaration; a
third method is one new class."""

import dataclasses

import pytest
import torch

import otsr
from otsr.methods import METHODS, Method, get_method, register_method
from otsr.testing import TINY


def test_built_in_methods_declare_losses_and_bundle_fields():
    assert set(METHODS) >= {"ots", "gan"}
    assert get_method("ots").losses == ("potential", "map") and get_method("gan").losses == ("critic", "map")
    assert {"lam", "gp"} <= get_method("gan").bundle_fields and "lam" not in get_method("ots").bundle_fields
    with pytest.raises(ValueError, match="unknown method 'vae'; valid methods: .*gan.*ots"):
        get_method("vae")


class PlainWGAN(Method):
    """A third method written as a user would: WGAN without gradient penalty and without content cost, with
    weight clipping of the critic (one file's worth of code)."""

    name = "wgan-clip"
    summary = "WGAN with a clipped critic (test method)"
    losses = ("critic", "map")
    critic_is_potential = False

    def step(self, s) -> torch.Tensor:
        for _ in range(s.cfg.critic_steps):
            x, y = s.sample_p(), s.sample_q()
            with torch.no_grad():
                fake = s.fwd_map(x)
            critic_loss = s.critic(fake).mean(1) - s.critic(y).mean(1)
            s.update(s.opt_critic, critic_loss)
            with torch.no_grad():
                for p in s.critic.parameters():
                    p.clamp_(-0.05, 0.05)
        x = s.sample_p()
        map_loss = -s.critic(s.fwd_map(x)).mean(1)
        s.update(s.opt_map, map_loss)
        return torch.stack([critic_loss.detach(), map_loss.detach()], 1)


def test_a_third_method_trains_solo_and_bundled_with_no_other_change(tmp_path):
    register_method(PlainWGAN())
    try:
        pair = otsr.make_pair("gaussian-shift", dim=4)
        cfg = otsr.TrainConfig(**{**TINY, "method": "wgan-clip", "critic_steps": 2})
        res = otsr.train(cfg, pair, out_dir=tmp_path / "solo")
        assert res.status == "completed" and set(res.history[-1]) == {"step", "loss_critic", "loss_map"}
        bundle = otsr.train_bundle([cfg, dataclasses.replace(cfg, seed=1)], pair)
        assert [r.status for r in bundle] == ["completed"] * 2
    finally:
        METHODS.pop("wgan-clip")


def test_ots_potential_batch_sizes_only_the_potential_updates():
    from otsr.pairs import GaussianShift

    class Counting(GaussianShift):
        def __post_init__(self):
            super().__post_init__()
            self.sizes = []

        def sample_q(self, n, generator):
            self.sizes.append(n)
            return super().sample_q(n, generator)

    pair = Counting(dim=4)
    cfg = otsr.TrainConfig(method="ots", steps=3, batch_size=32, map_steps=2, potential_batch=96, width=8,
                           critic_width=8, eval_every=10, eval_samples=64, final_eval_samples=64, device="cpu",
                           keep_best=False)
    pair.sizes = []
    assert otsr.train(cfg, pair).status == "completed"
    assert pair.sizes.count(96) == 3 and 32 not in pair.sizes  # Q is drawn only by the potential's updates
    with pytest.raises(ValueError, match="potential_batch"):
        otsr.TrainConfig(method="ots", potential_batch=-1)


def _l2_uvp(s, pair) -> float:
    from otsr.evaluation import evaluate

    with torch.no_grad():
        return evaluate(lambda x: s.map(x[None])[0], pair, n=2048, cost=s.cfg.cost, full=False)["l2_uvp"]


def test_ots_readout_regresses_the_map_onto_the_potentials_inverse_map():
    from otsr.pairs import Gaussian
    from otsr.state import build_state

    pair = Gaussian(dim=4)  # the Bures warm start puts the potential at the optimal quadratic of a Gaussian pair

    def cfg(warm_start: str):
        return otsr.TrainConfig(method="ots", steps=1, batch_size=256, width=16, lr_map=3e-3, readout_steps=400,
                                warm_start=warm_start, device="cpu")

    s = build_state(cfg("bures"), pair)
    s.map.load_state_dict(build_state(cfg("identity"), pair).map.state_dict())  # the map back at the identity
    before = _l2_uvp(s, pair)
    potential = {k: v.clone() for k, v in s.critic.state_dict().items()}
    assert s.method.finish(s) == "map read out from the potential in 400 updates"
    assert _l2_uvp(s, pair) < 0.05 * before  # the map the optimal potential implies: T*
    assert all(torch.equal(v, s.critic.state_dict()[k]) for k, v in potential.items())  # the potential is read only
    assert all(p.requires_grad for p in s.critic.parameters())  # and left trainable


def test_ots_readout_is_refused_by_name_where_it_does_not_apply():
    with pytest.raises(ValueError, match="readout_steps"):
        otsr.TrainConfig(method="ots", readout_steps=-1)
    with pytest.raises(ValueError, match="readout_steps"):
        otsr.TrainConfig(method="gan", readout_steps=10)  # an OTS setting


def test_a_run_with_a_readout_scores_and_names_the_read_out_map():
    from otsr.pairs import Gaussian
    from otsr.testing import tiny_config

    pair = Gaussian(dim=4)
    plain = otsr.train(tiny_config("ots", keep_best=False), pair)
    read = otsr.train(tiny_config("ots", keep_best=False, readout_steps=30), pair)
    assert plain.message == "completed 20 steps"
    assert read.message == "completed 20 steps; map read out from the potential in 30 updates"
    assert read.history == plain.history  # the same game
    assert read.metrics["l2_uvp"] != plain.metrics["l2_uvp"]  # the final evaluation scored the read-out map
