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
@pytest.mark.parametrize("family,seed,limit", [("convex-mixture", 0, 3.5), ("icnn-mixture", 1, 3.8)])
def test_default_recipe_holds_on_both_pair_families_at_a_tenth_of_its_budget(tmp_path, family, seed, limit):
    """`otsr bench --quality` end to end: OTS with every setting at its default except the budget (1,500 of the
    recipe's 15,000 steps at D = 16) on each family, icnn-mixture on a seed not looked at while tuning.
    Measured: 2.74 % (convex-mixture 0) and 3.00 % (icnn-mixture 1), best affine maps 32.3 % and 33.3 %; the full
    budget reaches 0.20 % and the values in README."""
    out = tmp_path / "quality.json"
    opts = QualityOptions(dims=(16,), methods=("ots",), budget=0.1, device="cpu", pairs=((family, seed),))
    results = run_quality(opts, out, quiet=True)
    row = results["pairs"][f"{family}:{seed}"]["16"]
    print(f"OTS {family}:{seed} D=16 at {row['ots']['steps']} steps: L2-UVP {row['ots']['l2_uvp']:.2f}% "
          f"(affine {row['affine_l2_uvp']:.1f}%) in {row['ots']['seconds']:.0f} CPU s")
    assert row["ots"]["status"] == "completed" and row["ots"]["steps"] == 1500
    assert row["ots"]["l2_uvp"] < limit < row["affine_l2_uvp"] / 5
    curve = [c["l2_uvp"] for c in row["ots"]["curve"]]
    assert curve[-1] < curve[0] / 5  # it learned: the start is the Bures map
    assert f"| {family} ({seed}) | 16 | OTS | 1500 |" in markdown(json.loads(out.read_text()))
