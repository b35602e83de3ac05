"""The SR check judges the final bias against bicubic's on the same samples, beyond its noise floor, not against the
periodic curve's start (which uses another, smaller sample set)."""

from otsr.bench.sr_check import check_run


def test_a_map_that_never_moved_does_not_pass_the_bias_check():
    # the demo set's figures: bicubic scores 0.117 on the 2,048 periodic samples and 0.101 on the 4,096 final ones
    evals = [{"step": 0, "psnr": 24.11, "psnr_bicubic": 24.11, "bias_frechet_hf": 0.117},
             {"step": 600, "psnr": 24.11, "psnr_bicubic": 24.11, "bias_frechet_hf": 0.101}]
    r = check_run(evals, "ots", "bias_frechet_hf", start_bias=0.101)
    assert r["psnr_ok"] and not r["bias_ok"]
    moved = check_run([evals[0], {**evals[1], "bias_frechet_hf": 0.093}], "ots", "bias_frechet_hf", start_bias=0.101)
    assert moved["bias_ok"] and moved["bias_start"] == 0.101


def test_psnr_more_than_a_decibel_below_bicubic_fails():
    evals = [{"step": 0, "psnr": 24.1, "psnr_bicubic": 24.1, "bias_frechet_hf": 0.1},
             {"step": 100, "psnr": 22.9, "psnr_bicubic": 24.1, "bias_frechet_hf": 0.05}]
    assert not check_run(evals, "ots", "bias_frechet_hf", start_bias=0.1)["psnr_ok"]


def test_a_decrease_within_three_noise_floors_does_not_count():
    # bicubic 0.1014 and a floor of 0.0023: 0.0960 is 2.3 floors down, 0.0933 is 3.5
    evals = [{"step": 0, "psnr": 24.11, "psnr_bicubic": 24.11, "bias_frechet_hf": 0.117},
             {"step": 600, "psnr": 23.6, "psnr_bicubic": 24.11, "bias_frechet_hf": 0.0960}]
    assert not check_run(evals, "ots", "bias_frechet_hf", start_bias=0.1014, floor=0.0023)["bias_ok"]
    evals[-1]["bias_frechet_hf"] = 0.0933
    r = check_run(evals, "ots", "bias_frechet_hf", start_bias=0.1014, floor=0.0023)
    assert r["bias_ok"] and r["bias_floor"] == 0.0023


def test_the_start_bias_comes_with_its_noise_floor_for_every_bias_metric():
    from otsr.bench.sr_check import start_map_bias
    from otsr.pairs import make_pair

    start = start_map_bias(make_pair("convex-images", size=8, pool=128), 256, "half_mean", "cpu")
    biases = [k for k in start if k.startswith("bias_")]
    assert biases and all(0 < start[f"floor/{k}"] < start[k] for k in biases)  # identity is far from Q
