"""The report's closed-form curves use the sweep's own GAN cost and gradient-penalty weight."""

import pytest

from otsr import theory
from sweep.report import theory_curves


@pytest.mark.parametrize("cost,kappa", [("mean", 1 / 16), ("sum", 1.0), ("half_mean", 0.5 / 16)])
@pytest.mark.parametrize("gp", [10.0, 3.0])
def test_theory_curve_follows_the_sweeps_cost_and_gamma(cost, kappa, gp):
    summary = {"pair": {"name": "gaussian-shift", "params": {"dim": 16, "shift": 4.0}}, "gan_cost": cost, "gp": gp}
    lams = [0.1, 1.0, 10.0]
    bias_gp, bias_lip = theory_curves(summary, "bias_mean_shift", lams)
    assert bias_gp == pytest.approx([theory.shift_bias(theory.gan_gp_shift(x, gp, 4.0, kappa), 4.0) for x in lams])
    assert bias_lip == pytest.approx([theory.shift_bias(theory.gan_shift(x, 4.0, kappa), 4.0) for x in lams])
    uvp, _ = theory_curves(summary, "l2_uvp", lams)
    assert uvp == pytest.approx([theory.shift_l2_uvp(theory.gan_gp_shift(x, gp, 4.0, kappa), 4.0, 16) for x in lams])


def test_a_different_cost_moves_the_curve():
    """The old report always used the mean cost and gamma = 10: the curves must differ when the sweep's do."""
    base = {"pair": {"name": "gaussian-shift", "params": {"dim": 16, "shift": 4.0}}, "gan_cost": "mean", "gp": 10.0}
    a, _ = theory_curves(base, "bias_mean_shift", [10.0])  # lambda = 10 is inside the biased range of all three
    b, _ = theory_curves({**base, "gan_cost": "sum"}, "bias_mean_shift", [10.0])
    c, _ = theory_curves({**base, "gp": 3.0}, "bias_mean_shift", [10.0])
    assert a[0] != pytest.approx(b[0]) and a[0] != pytest.approx(c[0])
