"""The benchmark command's machinery (figures come from `otsr bench`, not from timed tests)."""

import json

import pytest

from otsr import bench
from otsr.bench.quality import QualityOptions, markdown, run_quality

QUALITY_D16_REDUCED = 10.0  # % L2-UVP after 300 of 2000 steps (measured 7.98; best affine map: 32.3 %)


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


@pytest.mark.slow
def test_quality_benchmark_ots_at_d16_on_a_reduced_budget(tmp_path):
    """The quality command end to end at 15 % of the D = 16 recipe: OTS already far past the best affine map."""
    out = tmp_path / "quality.json"
    results = run_quality(QualityOptions(dims=(16,), methods=("ots",), budget=0.15, device="cpu"), out, quiet=True)
    row = results["dims"]["16"]
    print(f"OTS D=16 at {row['ots']['steps']} steps: L2-UVP {row['ots']['l2_uvp']:.2f}% "
          f"(affine {row['affine_l2_uvp']:.1f}%) in {row['ots']['seconds']:.0f}s")
    assert row["ots"]["status"] == "completed" and row["ots"]["steps"] == 300
    assert row["ots"]["l2_uvp"] < QUALITY_D16_REDUCED
    assert "| 16 | OTS | 300 |" in markdown(json.loads(out.read_text()))
