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
