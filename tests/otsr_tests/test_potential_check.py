"""The potential check: the AUC is the Mann-Whitney statistic, a critic separates what differs and not what does
not, and the command prints a verdict."""

import pytest
import torch

from otsr.bench.potential_check import run_potential_check, separation_auc, summary_lines
from otsr.pairs import make_pair


def test_separation_auc_counts_pairs_and_ties():
    assert separation_auc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert separation_auc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])) == 0.0
    assert separation_auc(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0])) == 0.5
    assert separation_auc(torch.tensor([2.0, 0.0]), torch.tensor([1.0])) == 0.5
    with pytest.raises(ValueError, match="1-D"):
        separation_auc(torch.zeros(2, 2), torch.zeros(2))


def test_critic_separates_a_shift_and_the_potential_sees_none_at_the_exact_start():
    # gaussian-shift: the GAN starts at the identity (P = N(0, I) vs Q = N(delta, I): separable); OTS starts at the
    # Bures map, which is exact for this pair, so its potential has nothing to find.
    pair = make_pair("gaussian-shift", dim=4)
    settings = {"steps": 150, "batch_size": 128, "critic_width": 32, "device": "cpu"}
    res = run_potential_check(pair, settings, n_eval=512, evals=3, quiet=True)
    assert res["gan"]["auc"] > 0.9, res["gan"]["curve"]
    assert 0.35 < res["ots"]["auc"] < 0.65, res["ots"]["curve"]
    lines = summary_lines(res)
    assert any("gan critic" in line and "separates" in line and "NOT" not in line for line in lines)
    assert any("ots potential" in line and "does NOT separate" in line for line in lines)
