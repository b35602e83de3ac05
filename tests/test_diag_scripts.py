"""The diagnostic scripts under bench/diag run end to end at toy sizes and write what their docstrings promise
(image_trace.py was committed with an indexing error that only running it would have shown)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OTSR_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_image_trace_records_the_potential_and_the_map_every_few_steps(tmp_path):
    out = tmp_path / "trace.json"
    _run(["bench/diag/image_trace.py", "--pair", "convex-images", "--every", "2", "--n", "16", "--out", str(out),
          "size=8", "pool=128", "steps=4", "eval_every=4", "eval_samples=32", "final_eval_samples=32"], tmp_path)
    got = json.loads(out.read_text())
    assert [r["step"] for r in got["trace"]] == [1, 2, 4]
    assert all(0 <= r["auc"] <= 1 and r["move_rms"] >= 0 for r in got["trace"])
    assert got["trace"][-1]["move_rms"] > 0  # the map left its start
    assert all(r["map_uvp"] > 0 and r["potential_uvp"] > 0 for r in got["trace"])  # convex-images has T*
    assert got["trace"][0]["potential_uvp"] > 50  # a potential one update from zero: about the identity's error


def test_c2st_scores_each_map_with_a_held_out_auc(tmp_path):
    out = tmp_path / "c2st.json"
    _run(["bench/diag/c2st.py", "--n", "64", "--steps", "2", "--seeds", "1", "--noise", "0.01", "--param",
          "workers=0", "--out", str(out)], tmp_path)
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"bicubic", "hr_vs_hr", "bicubic+noise0.01"}
    assert all(0 <= r["auc_mean"] <= 1 and len(r["auc"]) == 1 for r in rows.values())
    _run(["bench/diag/c2st.py", "--n", "64", "--steps", "2", "--seeds", "1", "--noise", "0.01", "--param",
          "workers=0", "--skip-baselines", "--out", str(out)], tmp_path)
    assert set(json.loads(out.read_text())["rows"]) == {"bicubic+noise0.01"}


def test_potential_fit_starts_at_the_identity_error_and_lowers_it(tmp_path):
    out = tmp_path / "fit.json"
    _run(["bench/diag/potential_fit.py", "--steps", "6", "--every", "3", "--n", "32", "--out", str(out),
          "size=8", "pool=128", "lr_critic=1e-2"], tmp_path)
    got = json.loads(out.read_text())
    assert [r["step"] for r in got["curve"]] == [0, 3, 6]
    assert got["start_uvp"] > 50  # a zero potential moves nothing: the identity's error
    assert got["curve"][-1]["fit_uvp"] < got["start_uvp"]


def test_best_response_trains_the_map_against_the_frozen_fitted_potential(tmp_path):
    out = tmp_path / "br.json"
    _run(["bench/diag/potential_fit.py", "--fit", "best-response", "--steps", "6", "--map-updates", "6", "--every",
          "3", "--n", "32", "--out", str(out), "size=8", "pool=128", "lr_critic=1e-2"], tmp_path)
    got = json.loads(out.read_text())
    assert [r["step"] for r in got["curve"]] == [0, 3, 6]  # the potential's fit
    assert [r["step"] for r in got["map_curve"]] == [0, 3, 6]  # then the map against it, from the identity
    assert got["map_curve"][0]["fit_uvp"] == got["start_uvp"]  # the map starts where the potential's fit started
    assert got["map_curve"][-1]["fit_uvp"] != got["map_curve"][0]["fit_uvp"]  # and moved


def test_lambda_search_replay_halves_on_the_recorded_curves(tmp_path):
    # a finished search's files as the sweep writes them: state.json's members and each member's result.json;
    # member c is worst at the first rung but best at the end, member a best early
    curves = {"a": [30.0, 20.0, 19.0], "b": [40.0, 35.0, 34.0], "c": [50.0, 15.0, 10.0], "d": [60.0, 50.0, 45.0]}
    folder = tmp_path / "sweep"
    members = {}
    for key, values in curves.items():
        (folder / "members" / key).mkdir(parents=True)
        evals = [{"step": s, "l2_uvp": v} for s, v in zip((100, 200, 300), values)]
        (folder / "members" / key / "result.json").write_text(json.dumps({"evals": evals}))
        members[key] = {"phase": "gan"}
    members["ots-000"] = {"phase": "ots"}
    (folder / "state.json").write_text(json.dumps({"members": members}))
    out = tmp_path / "replay.json"
    _run(["bench/diag/lambda_search_replay.py", str(folder), "--rungs", "100,200", "--eta", "2,4", "--out", str(out)],
         tmp_path)
    rows = json.loads(out.read_text())["sweep"]["rows"]
    assert rows["to the end"] == [[400, 30.0], [800, 15.0], [1200, 10.0]]
    assert rows["halving eta=2"] == [[400, 30.0], [600, 20.0], [700, 19.0]]  # c was cut at the first rung
    assert rows["halving eta=4"] == [[400, 30.0], [500, 20.0], [600, 19.0]]


def test_lambda_search_replay_replays_the_sweeps_rung_rule_with_the_bias_in_either_bundle_order(tmp_path):
    # bundles (a, b) and (c, d); b ends the least biased (sliced W2 0.5 under OTS's 0.9) but is worst-but-one by
    # L2-UVP, c is the best at the end; rungs at 100 and 200 keep the best half by L2-UVP or by the bias
    l2 = {"a": [30.0, 20.0, 19.0], "b": [40.0, 35.0, 34.0], "c": [50.0, 15.0, 10.0], "d": [60.0, 50.0, 45.0]}
    sw2 = {"a": [5.0, 4.0, 3.0], "b": [1.0, 0.8, 0.5], "c": [6.0, 5.0, 4.0], "d": [7.0, 6.0, 5.0]}
    folder = tmp_path / "sweep"
    for key in l2:
        (folder / "members" / key).mkdir(parents=True)
        evals = [{"step": s, "l2_uvp": v, "bias_sliced_w2": w} for s, v, w in zip((100, 200, 300), l2[key], sw2[key])]
        (folder / "members" / key / "result.json").write_text(json.dumps({"evals": evals}))
    (folder / "state.json").write_text(json.dumps({"members": {k: {"phase": "gan"} for k in l2}}))
    (folder / "report.json").write_text(json.dumps({"table": [{"metric": "bias_sliced_w2", "ots_mean": 0.9}]}))
    out = tmp_path / "replay.json"
    _run(["bench/diag/lambda_search_replay.py", str(folder), "--rungs", "100", "--eta", "2", "--asha", "100:2",
          "--also", "bias_sliced_w2", "--bundle", "2", "--out", str(out)], tmp_path)
    got = json.loads(out.read_text())["sweep"]["asha"]
    first, last = got["100:2"], got["100:2 last bundle first"]
    # (a, b) first: judged against each other, both go on (a by L2-UVP, b by the bias); c and d then miss both
    assert first["trace"] == [[400, 30.0], [600, 20.0], [800, 19.0]]
    assert first["trained"] == {"a": 300, "b": 300, "c": 100, "d": 100}
    # (c, d) first: c is the better of two and goes on, and ends the best
    assert last["trace"] == [[400, 30.0], [700, 15.0], [1000, 10.0]]
    assert last["trained"] == {"a": 300, "b": 300, "c": 300, "d": 100}
    assert first["less_biased"] == first["less_biased_kept"] == last["less_biased_kept"] == ["b"]


def test_bias_samples_puts_each_runs_bias_beside_the_noise_floor_at_each_size(tmp_path):
    from otsr.cli import main as otsr_main

    assert otsr_main(["train", "--pair", "gaussian", "--dim", "3", "--method", "ots", "--steps", "3", "--out",
                      str(tmp_path / "run")]) == 0
    out = tmp_path / "bias.json"
    _run(["bench/diag/bias_samples.py", f"ots={tmp_path / 'run'}", "--sizes", "256,4096", "--out", str(out)],
         tmp_path)
    got = json.loads(out.read_text())
    row = got["runs"]["ots"]
    assert row["method"] == "ots" and row["step"] == 3 and set(row["rows"]) == {"256", "4096"}
    assert all(r["l2_uvp"] > 0 and r["bias_sliced_w2"] > 0 for r in row["rows"].values())
    floors = got["floors"][row["pair"]]
    assert floors["4096"]["bias_frechet"] < floors["256"]["bias_frechet"]  # the floor falls with the sample size


def test_potential_readout_fits_a_map_on_the_potentials_inverse_map(tmp_path):
    run = tmp_path / "run"
    _run(["-m", "otsr.cli", "train", "--pair", "convex-images", "--pair-param", "size=8", "--pair-param", "pool=128",
          "--steps", "20", "--eval-every", "10", "--eval-samples", "64", "--final-eval-samples", "64", "--out",
          str(run)], tmp_path)
    out = tmp_path / "readout.json"
    _run(["bench/diag/potential_readout.py", str(run), "--steps", "6", "--every", "3", "--n", "32", "--out", str(out)],
         tmp_path)
    got = json.loads(out.read_text())
    assert got["run_step"] == 20 and got["run_map_uvp"] > 0 and got["potential_uvp"] > 0
    assert [r["step"] for r in got["curve"]] == [0, 3, 6]
    assert got["curve"][-1]["readout_uvp"] != got["curve"][0]["readout_uvp"]  # the read-out map trained
    assert set(got["readout_metrics"]) == set(got["run_metrics"]) == {"l2_uvp", "bias_sliced_w2"}
    _run(["bench/diag/potential_readout.py", str(run), "--steps", "0", "--start", "run", "--n", "32", "--out",
          str(out)], tmp_path)
    got = json.loads(out.read_text())
    assert got["curve"][0]["readout_uvp"] == got["run_map_uvp"]  # started at the run's own map


def test_map_spectrum_gives_a_linear_maps_eigenvalues_and_refuses_a_pair_without_t_star(tmp_path):
    """On the Gaussian pair T* is the linear Bures map A, so the spectrum must be A's eigenvalues at every point;
    on convex-images it also reports the high-pass share of the stretched directions; with --run it splits a
    finished OTS run's errors between the stretched span and the rest."""
    import torch

    from otsr.pairs import make_pair

    out = tmp_path / "spectrum.json"
    _run(["bench/diag/map_spectrum.py", "--pair", "gaussian", "--samples", "2", "--factor", "1.5", "--out", str(out),
          "dim=5", "seed=3"], tmp_path)
    got = json.loads(out.read_text())
    ev = torch.linalg.eigvalsh(make_pair("gaussian", dim=5, seed=3).ot_matrix)
    for row in got["rows"]:
        assert abs(row["lambda_min"] - float(ev[0])) < 1e-3 and abs(row["lambda_max"] - float(ev[-1])) < 1e-2
        assert row["n_above"] == int((ev > 1.5 * ev[0]).sum()) and row["asymmetry"] < 1e-2
    spec = importlib.util.spec_from_file_location("map_spectrum", REPO / "bench/diag/map_spectrum.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    image = make_pair("convex-images", size=8, pool=64)
    row, basis = script.spectrum(image, image.sample_p(1, torch.Generator().manual_seed(0))[0], 5.0)
    assert basis.shape == (192, row["n_above"])
    assert row["dim"] == 192 and row["n_above"] > 0 and 0 <= row["high_pass_share_above"] <= 1
    with pytest.raises(ValueError, match="no T\\*\\(x\\) to differentiate"):
        script.true_map(make_pair("convex-images", size=8, pool=64, orientation="restore"))

    from otsr.cli import main as otsr_main

    assert otsr_main(["train", "--pair", "gaussian", "--dim", "3", "--method", "ots", "--steps", "3", "--out",
                      str(tmp_path / "run")]) == 0
    _run(["bench/diag/map_spectrum.py", "--run", str(tmp_path / "run"), "--samples", "2", "--factor", "1.2",
          "--out", str(out)], tmp_path)
    got = json.loads(out.read_text())
    assert got["run"] == str(tmp_path / "run") and len(got["rows"]) == 2
    for key in ("map_error", "inverse_error", "displacement"):
        assert 0 <= got["mean"][f"{key}_share"] <= 1 and got["mean"][f"{key}_sq"] >= 0
    assert got["mean"]["isotropic_share"] == round(got["rows"][0]["n_above"] / 3, 4)
