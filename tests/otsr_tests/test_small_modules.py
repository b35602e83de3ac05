"""Runtime, sampling, warm start, run folder, result and metric registry: the small modules' promises."""

import json

import pytest
import torch

import otsr
from otsr.evaluation import metric_names
from otsr.metric_registry import METRICS, metric_direction, register_metric, table_metrics
from otsr.pairs import Gaussian, make_pair
from otsr.runtime import resolve_device, resolve_precision
from otsr.sampling import draw, draw_q, var_q
from otsr.testing import TINY, GradientPair
from otsr.warm_start import fit_gaussians


def test_devices_and_precision_resolve_as_documented():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="'tpu' is not"):
        resolve_device("tpu")
    cpu = torch.device("cpu")
    assert resolve_precision("auto", "unet", cpu) == "fp32" and resolve_precision("bf16", "mlp", cpu) == "bf16"
    assert resolve_precision("auto", "unet", torch.device("cuda")) == "bf16"
    assert resolve_precision("bf16", "unet", torch.device("cuda"), reference_habits=True) == "fp32"


def test_sampling_gives_autograd_to_samplers_under_no_grad():
    pair = GradientPair()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x, t = draw(pair, 5, g, True)
        y = draw_q(pair, 5, g)
        v = var_q(pair)
    assert x.shape == t.shape == y.shape == (5, 3) and not t.requires_grad and v > 0
    assert torch.allclose(t, pair.closed_form_map(x), atol=1e-5)


def test_gaussian_fit_recovers_a_gaussian_pair():
    pair = Gaussian(dim=4, seed=1)
    fit = fit_gaussians(pair, warm=True, n=1 << 15)
    assert torch.allclose(fit.mean_q, pair.mean_q, atol=0.05)
    assert torch.allclose(fit.bures_matrix(), pair.ot_matrix, atol=0.05)


def test_run_folder_holds_the_resolved_config_and_marks_completion(tmp_path):
    res = otsr.solve("gaussian-shift", "ots", out_dir=tmp_path, pair_params={"dim": 4}, **TINY)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["resolved"] == {"width": 32, "critic_width": 128, "device": "cpu"} and cfg["shapes"]["p"] == [4]
    summary = json.loads((tmp_path / "result.json").read_text())
    assert summary == json.loads(json.dumps(res.summary())) and summary["status"] == "completed"
    assert json.loads((tmp_path / "metrics.json").read_text()) == res.metrics
    assert {p.name for p in tmp_path.iterdir()} >= {"curves.png", "map.png", "checkpoint.pt"}


def test_metric_registry_is_the_one_table():
    assert metric_direction("cos") == "max" and metric_direction("l2_uvp") == "min"
    assert "shift" not in table_metrics() and "l2_uvp" in table_metrics()
    with pytest.raises(ValueError, match="better='up'"):
        register_metric("x", "up", True, "bad")
    pair = make_pair("gaussian-shift", dim=4)
    assert metric_names(pair) <= set(METRICS)  # every reported name is registered
