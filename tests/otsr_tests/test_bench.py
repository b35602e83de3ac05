"""The benchmark command's machinery (figures come from `otsr bench`, not from timed tests)."""

import pytest

from otsr import bench


def test_flop_count_scales_with_batch_and_includes_the_gradient_penalty():
    base = bench.configs()["cpu-mlp-gan-d16"]
    small = bench.time_loop(base, reference=False, steps=1, warmup=0)
    big_cfg = bench.BenchConfig("x", base.pair, {**base.train, "batch_size": 512}, "cpu")
    big = bench.time_loop(big_cfg, reference=False, steps=1, warmup=0)
    assert big["flops_per_step"] == pytest.approx(2 * small["flops_per_step"], rel=0.01)
    no_gp = bench.time_loop(bench.BenchConfig("y", base.pair, {**base.train, "gp": 0.0}, "cpu"), reference=False,
                            steps=1, warmup=0)
    assert no_gp["flops_per_step"] < small["flops_per_step"]  # double backward of the penalty is counted
    assert small["steps_per_s"] > 0 and small["samples_per_s"] == pytest.approx(11 * 256 * small["steps_per_s"])


def test_sr_configuration_builds_edsr_on_cpu():
    cfg = bench.configs()["aim19-ots-b8"]
    small = bench.BenchConfig("sr", bench.RandomImages(8, scale=4), {**cfg.train, "width": 8, "depth": 2,
                                                                     "map_steps": 1, "batch_size": 2}, "cpu")
    out = bench.time_loop(small, reference=False, steps=1, warmup=0)
    assert out["flops_per_step"] > 0


def test_readme_table_is_replaced_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nintro\n")
    bench.write_readme(readme, "cpu", "| a |\n|---|")
    bench.write_readme(readme, "cpu", "| b |\n|---|")
    text = readme.read_text()
    assert text.count("<!-- bench:cpu:begin -->") == 1 and "| b |" in text and "| a |" not in text
    assert text.startswith("# x\n\nintro\n")
