"""The benchmark command's machinery (figures come from `otsr bench`, not from timed tests)."""

import json
import math
import time

import pytest
import torch

from otsr import bench
from otsr.bench import bundles, quality
from otsr.bench.quality import QualityOptions, markdown, run_quality
from otsr.bench.speed import count_flops
from otsr.checkpoint import load_checkpoint
from otsr.models import Linear
from otsr.pairs import ConvexMixture, make_pair
from otsr.recipes import resolve_members
from otsr.state import build_state
from otsr.testing import TINY

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


def test_flop_count_of_one_linear_layer_matches_the_hand_count():
    """baddbmm of (K, B, in) x (K, in, out): 2 K B in out forward; backward (input and weight grads) twice that."""
    k, b, fan_in, fan_out = 3, 11, 5, 7
    layer = Linear(k, fan_in, fan_out)
    x = torch.randn(k, b, fan_in, requires_grad=True)
    forward = 2 * k * b * fan_in * fan_out
    assert count_flops(lambda: layer(x)) == forward
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * forward


def _tiny_gan_state(k: int):
    settings = {**TINY, "method": "gan", "critic_steps": 2, "lam": [10.0 ** (i - 1) for i in range(k)]}
    return build_state(resolve_members(ConvexMixture(dim=4), settings), ConvexMixture(dim=4))


def test_flops_of_one_outer_step_scale_linearly_with_the_bundle_size():
    flops_1, calls_1 = bundles.count_step(_tiny_gan_state(1))
    flops_4, calls_4 = bundles.count_step(_tiny_gan_state(4))
    assert flops_4 == pytest.approx(4 * flops_1, rel=0.01)  # not exact: members of one seed share the draws
    assert {(4, *shape[1:]): n for shape, n in calls_1.items()} == dict(calls_4)  # same calls, K-wide layers
    dense = sum(2 * k * b * i * o * n for (k, b, i, o), n in calls_1.items())
    assert dense < flops_1 < 4 * dense  # backward and the penalty's double backward are counted on top


def test_bundle_bench_prints_gflops_and_its_share_of_both_limits():
    report = bundles.run_bundle_bench(["mlp-gan-d16"], sizes=[1, 2], steps=2, warmup=1, limit_seconds=0.05)
    assert report["matmul_fp32_gflops"] > 0 and report["matmul_bf16_gflops"] is None  # bf16: CUDA only
    for b in report["rows"]["mlp-gan-d16"]["bundles"]:
        assert b["flops_per_step"] > 0 and b["gflops"] > 0 and b["bmm_limit_gflops"] > 0
    assert all(p["gflops"] > 0 for p in report["rows"]["mlp-gan-d16"]["packings"])
    table = bundles.markdown(report)
    assert "| GFLOP/s | % of matmul peak | % of batched-matmul limit |" in table
    row = next(line for line in table.splitlines() if line.startswith("| mlp-gan-d16 | 2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 8 and all(math.isfinite(float(c)) for c in cells[4:7])
    old = json.loads(json.dumps(report))  # a report from before the FLOP columns: those keys absent
    old.pop("matmul_fp32_gflops"), old.pop("matmul_bf16_gflops")
    for rows in old["rows"].values():
        for b in rows["bundles"] + rows["packings"]:
            for key in ("flops_per_step", "gflops", "bmm_limit_gflops", "dense_calls"):
                b.pop(key, None)
    row = next(line for line in bundles.markdown(old).splitlines() if line.startswith("| mlp-gan-d16 | 2 |"))
    assert [c.strip() for c in row.strip("|").split("|")][4:7] == ["–", "–", "–"]
    unpacked = json.loads(json.dumps(report))  # --no-pack (the GPU check's dry run): no solo packing to compare
    unpacked["rows"]["mlp-gan-d16"].update(packings=[], best_packing=None)
    row = next(line for line in bundles.markdown(unpacked).splitlines() if line.startswith("| mlp-gan-d16 | 2 |"))
    assert [c.strip() for c in row.strip("|").split("|")][3] == "–"


def test_bundle_bench_runs_on_the_threads_asked_for():
    report = bundles.run_bundle_bench(["mlp-gan-d16"], sizes=[1], steps=2, warmup=1, pack=False, limit_seconds=0,
                                      threads=1)
    assert report["cores"] == 1 and report["rows"]["mlp-gan-d16"]["bundles"][0]["threads"] == 1
    assert "bundles use 1 thread(s)" in bundles.markdown(report)


def test_speed_table_on_cuda_shows_shares_of_the_bf16_and_the_fp32_peak():
    lean = {"steps_per_s": 10.0, "samples_per_s": 640.0, "tflops": 50.0, "peak_mem_gib": 1.0}
    report = {"date": "d", "machine": "m", "torch": "t", "steps": 2, "compile": False,
              "peaks_tflops": {"cuda": 1000.0}, "peaks_fp32_tflops": {"cuda": 100.0},
              "rows": [{"config": "c", "device": "cuda", "lean": lean, "reference": lean, "speedup": 1.0,
                        "peak_share": 0.05, "fp32_peak_share": 0.5}]}
    table = bench.markdown(report)
    assert "| % of bf16 peak | % of fp32 peak |" in table and "| 50.000 | 5.0 | 50.0 | 1.00 |" in table
    del report["peaks_fp32_tflops"], report["rows"][0]["fp32_peak_share"]  # a CPU-only or older report
    assert "| % of peak | peak mem (GiB) |" in bench.markdown(report)


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
@pytest.mark.parametrize("family,seed,limit", [("convex-mixture", 0, 6.4), ("icnn-mixture", 1, 6.0)])
def test_default_recipe_holds_on_both_pair_families_at_a_twentieth_of_its_budget(tmp_path, family, seed, limit):
    """`otsr bench --quality` end to end: OTS with every setting at its default except the budget (750 of the
    recipe's 15,000 steps at D = 16) on each family, icnn-mixture on a seed not looked at while tuning.
    Measured (one thread, 2026-12-07): 5.47 % (convex-mixture 0) and 5.04 % (icnn-mixture 1), best affine maps
    32.3 % and 33.3 %, about 30 CPU s each; a tenth of the budget gave 2.74 and 3.00 %, the full budget 0.20 % and
    the values in README."""
    out = tmp_path / "quality.json"
    opts = QualityOptions(dims=(16,), methods=("ots",), budget=0.05, device="cpu", pairs=((family, seed),))
    results = run_quality(opts, out, quiet=True)
    row = results["pairs"][f"{family}:{seed}"]["16"]
    print(f"OTS {family}:{seed} D=16 at {row['ots']['steps']} steps: L2-UVP {row['ots']['l2_uvp']:.2f}% "
          f"(affine {row['affine_l2_uvp']:.1f}%) in {row['ots']['seconds']:.0f} CPU s")
    assert row["ots"]["status"] == "completed" and row["ots"]["steps"] == 750
    assert row["ots"]["l2_uvp"] < limit < row["affine_l2_uvp"] / 5
    curve = [c["l2_uvp"] for c in row["ots"]["curve"]]
    assert curve[-1] < curve[0] / 5  # it learned: the start is the Bures map
    assert f"| {family} ({seed}) | 16 | OTS | 750 |" in markdown(json.loads(out.read_text()))


@pytest.mark.slow
@pytest.mark.parametrize("family,seed,limit", [("convex-mixture", 0, 25.0), ("icnn-mixture", 1, 17.5)])
def test_default_d64_recipe_holds_on_both_pair_families_at_a_twentieth_of_its_budget(tmp_path, family, seed, limit):
    """The recipe above D = 16 (batch 1024, 10 map steps per potential step, 9,000 steps, the map's weight average at
    0.995) at 450 steps, every other setting at its default. Measured (2026-12-08, beside other jobs): 18.72 % on
    convex-mixture 0 (best affine map 48.8 %) and 13.17 % on held-out icnn-mixture 1 (40.2 %); with the former
    recipe (6,000 steps, no average) at 300 steps, 22.5 and 15.45 %. The full budget reaches 3.6-4 % (README)."""
    opts = QualityOptions(dims=(64,), methods=("ots",), budget=0.05, device="cpu", pairs=((family, seed),))
    row = run_quality(opts, tmp_path / "quality.json", quiet=True)["pairs"][f"{family}:{seed}"]["64"]
    ots = row["ots"]
    print(f"OTS {family}:{seed} D=64 at {ots['steps']} steps: L2-UVP {ots['l2_uvp']:.2f}% "
          f"(affine {row['affine_l2_uvp']:.1f}%) in {ots['seconds']:.0f} CPU s")
    assert ots["status"] == "completed" and ots["steps"] == 450
    assert ots["l2_uvp"] < limit < row["affine_l2_uvp"] / 1.5
    curve = [c["l2_uvp"] for c in ots["curve"]]
    assert curve[-1] < curve[0] / 2.5 and curve[-1] <= min(curve) * 1.05  # it learned, and ends at its best


def test_a_quality_run_stopped_midway_continues_from_its_checkpoint_with_its_cpu_seconds(tmp_path, monkeypatch):
    """A D = 128 row takes hours on a CPU: the bench trains it in a folder and a second call continues it from the
    last checkpoint, ending exactly where an uninterrupted run ends, with the first call's CPU seconds counted."""
    pair = make_pair("convex-mixture", dim=4)
    small = {"final_eval_samples": 512, "eval_samples": 256}  # checkpoints every tenth of the run: 4 steps
    whole = quality._train(pair, "ots", 40, "cpu", tmp_path / "whole", **small)
    note = quality._CpuLedger.note

    def stop_at_32(self, step):
        note(self, step)
        if step == 32:  # noted, but killed before the checkpoint at step 32 was written
            raise RuntimeError("killed")

    monkeypatch.setattr(quality._CpuLedger, "note", stop_at_32)
    folder = tmp_path / "run"
    with pytest.raises(RuntimeError, match="killed"):
        quality._train(pair, "ots", 40, "cpu", folder, **small)
    monkeypatch.setattr(quality._CpuLedger, "note", note)
    spent = json.loads((folder / "cpu_seconds.json").read_text())
    assert load_checkpoint(folder)["step"] == 28 and "32" in spent and "36" not in spent
    t0 = time.process_time()
    row = quality._train(pair, "ots", 40, "cpu", folder, **small)
    resumed = time.process_time() - t0
    assert row["status"] == "completed" and row["steps"] == 40
    assert row["l2_uvp"] == whole["l2_uvp"]
    # the same curve (map_change restarts after a resume: the outputs it compares with are not checkpointed)
    assert [(c["step"], c["l2_uvp"]) for c in row["curve"]] == [(c["step"], c["l2_uvp"]) for c in whole["curve"]]
    assert row["seconds"] > resumed + spent["28"] / 2  # the seconds up to the checkpoint it continued from count
    assert row["code"] and row["date"]
    # a run that ended before its row reached the results file keeps its seconds when the bench reads it again
    assert quality._train(pair, "ots", 40, "cpu", folder, **small)["seconds"] >= row["seconds"]
    with pytest.raises(ValueError, match=r"lr_map=0.001 where this bench wants lr_map=0.0001; pass --redo"):
        quality._train(pair, "ots", 40, "cpu", folder, **{**small, "lr_map": 1e-4})


def test_the_quality_bench_keeps_stored_rows_and_redo_measures_them_again(tmp_path):
    out = tmp_path / "q.json"
    opts = QualityOptions(dims=(4,), methods=("ots",), budget=0.002, device="cpu", pairs=(("convex-mixture", 0),))
    run_quality(opts, out, quiet=True)
    stored = json.loads(out.read_text())
    stored["pairs"]["convex-mixture:0"]["4"]["ots"]["l2_uvp"] = -1.0  # a mark a new measurement would replace
    out.write_text(json.dumps(stored))
    assert run_quality(opts, out, quiet=True)["pairs"]["convex-mixture:0"]["4"]["ots"]["l2_uvp"] == -1.0
    opts.redo = True
    again = run_quality(opts, out, quiet=True)["pairs"]["convex-mixture:0"]["4"]["ots"]
    assert again["l2_uvp"] > 0 and again["steps"] == 30
    assert (tmp_path / "q.runs" / "convex-mixture-0-d4-ots" / "result.json").exists()
