"""TrainConfig and bundles of configs: validation names the key, comments are the help text, members share what
changes shapes or the loop."""

import math

import pytest

from otsr.config import TrainConfig, check_bundle


def test_every_field_has_help_from_its_comment():
    helps = TrainConfig.field_help()
    assert set(helps) == set(TrainConfig.__dataclass_fields__)
    assert all(text for text in helps.values())
    assert "continues" not in helps["warm_start"] and "bures for OTS" in helps["warm_start"]  # a wrapped comment


def test_cosine_factor_goes_from_one_to_zero():
    cfg = TrainConfig(steps=100, lr_schedule="cosine")
    assert cfg.lr_factor(0) == 1.0 and cfg.lr_factor(50) == pytest.approx(0.5) and cfg.lr_factor(100) == 0.0
    assert TrainConfig(steps=100).lr_factor(77) == 1.0


@pytest.mark.parametrize("bad,match", [({"width": -1}, "'width'"), ({"beta2": 1.0}, "'beta2'"),
                                       ({"compile": "yes"}, "'compile'"), ({"gp": math.inf}, "'gp'"),
                                       ({"perceptual_weight": 1.0}, "'perceptual_weights'")])
def test_bad_values_name_the_key(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**bad)


def test_bundle_members_share_shapes_and_method():
    a = TrainConfig(method="gan", lam=1.0)
    check_bundle([a, a.replace(lam=2.0, gp=5.0, lr_map=3e-4, lr_critic=1e-3, seed=4)])  # may differ
    with pytest.raises(ValueError, match="config key 'batch_size'.*64 and 128"):
        check_bundle([a, a.replace(batch_size=128)])
    with pytest.raises(ValueError, match="one method"):
        check_bundle([a, TrainConfig(method="ots")])
    check_bundle([TrainConfig(method="ots"), TrainConfig(method="ots", seed=1)])
    with pytest.raises(ValueError, match="config key 'gp'.*what may differ for 'ots'"):  # only the GAN varies gp
        check_bundle([TrainConfig(method="ots"), TrainConfig(method="ots", gp=5.0)])


def test_each_method_owns_its_settings():
    """Defaults, help and what may vary in a bundle come from the method's settings dataclass."""
    import dataclasses

    from otsr.methods import METHODS, owner

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for m in (METHODS["gan"], METHODS["ots"]):
        for f in dataclasses.fields(m.Settings):
            assert defaults[f.name] == f.default and owner(f.name) is m
    assert METHODS["gan"].settings == ("lam", "gp", "critic_steps")
    assert METHODS["ots"].settings == ("map_steps", "potential_gain", "potential_contrast", "potential_batch",
                                       "readout_steps")
    assert METHODS["gan"].bundle_fields >= {"lam", "gp"} and "critic_steps" not in METHODS["gan"].bundle_fields
    assert "lambda" in TrainConfig.field_help()["lam"] and "potential" in TrainConfig.field_help()["potential_gain"]
    assert owner("batch_size") is None
    with pytest.raises(ValueError, match="'critic_steps': this key belongs to method 'gan'"):
        TrainConfig(method="ots", critic_steps=5)
    with pytest.raises(ValueError, match="'map_steps': this key belongs to method 'ots'"):
        TrainConfig(method="gan", map_steps=3)
    with pytest.raises(ValueError, match="'map_steps'"):
        TrainConfig(method="ots", map_steps=0)  # validated by OTSSettings


OLD_SR_OTS_RUN = {  # config.json's "train" of an SR OTS run written before the methods owned their settings:
    # the SR recipe gave every method map_steps 15 and critic_steps 5, and every knob was stored flat
    "method": "ots", "steps": 300, "batch_size": 8, "cost": "half_mean", "lam": 0.0, "perceptual_weight": 0.0,
    "perceptual_weights": "", "gp": 10.0, "map_steps": 15, "potential_gain": 1.0, "critic_steps": 5,
    "lr_map": 1e-4, "lr_critic": 1e-4, "beta1": 0.0, "beta2": 0.9, "lr_schedule": "constant", "map_model": "auto",
    "critic_model": "auto", "width": 8, "critic_width": 0, "depth": 2, "warm_start": "auto", "seed": 0,
    "device": "cpu", "log_every": 100, "eval_every": 100, "eval_samples": 2048, "final_eval_samples": 4096,
    "checkpoint_every": 2000, "precision": "auto", "channels_last": True, "compile": False,
    "reference_habits": False}


def test_a_run_folder_written_before_the_change_still_loads(tmp_path):
    import json

    import torch

    from otsr.checkpoint import load_checkpoint, save_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"train": OLD_SR_OTS_RUN, "pair": {"name": "sr-folders", "params": {}},
                                                 "resolved": {"width": 8, "critic_width": 32, "device": "cpu"}}))
    (run / "result.json").write_text(json.dumps({"status": "completed", "step": 300, "metrics": {}}))
    stored = json.loads((run / "config.json").read_text())["train"]
    with pytest.raises(ValueError, match="'critic_steps': this key belongs to method 'gan'"):
        TrainConfig.from_dict(stored)  # as user input: another method's knob is an error
    cfg = TrainConfig.from_stored(stored)  # as a stored config: the knob OTS never read loads as its default
    assert (cfg.method, cfg.map_steps, cfg.critic_steps, cfg.cost) == ("ots", 15, 10, "half_mean")
    save_checkpoint({"config": OLD_SR_OTS_RUN, "pair": {"name": "sr-folders", "params": {}}, "step": 300,
                     "map": {"w": torch.zeros(1)}, "critic": {"w": torch.zeros(1)}}, run)
    assert TrainConfig.from_dict(load_checkpoint(run)["config"]) == cfg
