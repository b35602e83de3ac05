import json
from pathlib import Path

import pytest

from otsr.cli import EXIT_BAD_INPUT, EXIT_DIVERGED, main

FAST = ["--steps", "20", "--batch-size", "32", "--log-every", "5", "--eval-every", "10", "--width", "16",
        "--final-eval-samples", "256", "--checkpoint-every", "10", "--device", "cpu"]


@pytest.mark.parametrize("args,message", [
    (["--pair", "nope"], "unknown pair 'nope'"),
    (["--method", "vae"], "invalid choice: 'vae'"),
    (["--compile", "false"], "unrecognized arguments: false"),
    (["--method", "gan", "--lam", "-1"], "lambda=-1.0 must be >= 0"),
    (["--pair", "convex-mixture", "--dim", "300"], "dim=300 is outside its range"),
    (["--pair-param", "shift"], "expected KEY=VALUE"),
    (["--pair-param", "shift=abc"], "'abc' is not a valid float"),
    (["--steps", "abc"], "--steps: 'abc' is not a valid int"),
    (["--width", "8,16"], "--width: '8,16' is not a valid int"),
    (["--method", "gan", "--lam", "1,2", "--seed", "0,1,2"], "equal lengths"),
    (["--device", "tpu"], "config key 'device': 'tpu' is not supported (valid: auto, cpu, cuda, cuda:N)"),
])
def test_bad_input_fails_before_any_output(args, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *FAST, *args, "--out", str(out)]) == EXIT_BAD_INPUT  # args last: they win
    assert message in capsys.readouterr().err
    assert not out.exists()


def _result(out):
    return json.loads((out / "result.json").read_text())


def test_train_then_resume_with_more_steps(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--pair", "gaussian-shift", "--dim", "4", "--method", "gan", "--lam", "2", *FAST,
                 "--lr-schedule", "constant", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("completed at step 20") and "l2_uvp" in text and len(text.splitlines()) == 2
    assert _result(out)["status"] == "completed" and _result(out)["step"] == 20
    assert {p.name for p in out.iterdir()} >= {"config.json", "checkpoint.pt", "metrics.json", "map.png"}
    assert main(["train", "--out", str(out), *FAST]) == EXIT_BAD_INPUT  # refuses to clobber a finished run
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--steps", "30"]) == 0
    err = capsys.readouterr().err
    assert "resuming from step 20 of 30" in err and "cosine" not in err  # a constant schedule: no warning
    assert _result(out)["step"] == 30 and _result(out)["method"] == "gan"
    assert json.loads((out / "config.json").read_text())["train"]["lam"] == 2.0
    assert main(["train", "--resume", str(out), "--steps", "30"]) == 0  # complete: nothing to train
    assert "nothing to train" in capsys.readouterr().err
    assert _result(out)["step"] == 30 and len(_result(out)["evals"]) == len(set(e["step"] for e in
                                                                                 _result(out)["evals"]))
    assert main(["train", "--resume", str(out), "--steps", "25"]) == EXIT_BAD_INPUT
    assert "cannot be shortened" in capsys.readouterr().err


def test_resume_warns_when_a_longer_run_stretches_a_finished_cosine_schedule(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--pair", "gaussian-shift", "--dim", "4", *FAST, "--lr-schedule", "cosine",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--steps", "40"]) == 0
    assert "learning-rate factor at step 20 goes from 0 to 0.5" in capsys.readouterr().err


def test_print_config_shows_the_resolved_recipe_and_exits(tmp_path, capsys):
    assert main(["train", "--pair", "convex-mixture", "--dim", "16", "--method", "ots", "--print-config"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["train"]["batch_size"] == 256 and cfg["train"]["map_steps"] == 3 and cfg["resolved"]["width"] == 128
    assert cfg["resolved"]["device"] in ("cpu", "cuda")


def test_divergence_exit_code(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--pair", "gaussian-shift", "--dim", "4", *FAST, "--lr-map", "1e30",
                 "--lr-critic", "1e30", "--out", str(out)])
    assert code == EXIT_DIVERGED and capsys.readouterr().out.startswith("diverged at step")
    assert _result(out)["status"] == "diverged" and _result(out)["message"].startswith("diverged at step ")
    assert not (out / "metrics.json").exists()


def test_pairs_lists_every_pair(capsys):
    assert main(["pairs"]) == 0
    text = capsys.readouterr().out
    for name in ("gaussian-shift", "gaussian", "convex-mixture", "degraded-images"):
        assert f"{name}:" in text


def test_a_user_pair_by_import_path_trains_resumes_and_is_listed_in_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--pair", "otsr.testing:GradientPair", "--pair-param", "dim=2", "--method", "ots", *FAST,
                 "--out", str(out)]) == 0
    printed = _result(out)
    assert printed["pair"] == {"name": "otsr.testing:GradientPair", "params": {"dim": 2, "seed": 0}}
    assert "l2_uvp" in printed["metrics"]
    assert main(["train", "--resume", str(out), "--steps", "25"]) == 0  # rebuilt from the spec in the checkpoint
    assert _result(out)["step"] == 25


@pytest.mark.parametrize("args,message", [
    (["--method", "gan"], "the run has method='ots'; --method 'gan' would change it"),
    (["--pair", "convex-mixture"], "the run is on pair 'gaussian-shift'; --pair 'convex-mixture' would change it"),
    (["--dim", "8"], "pair parameters come from the checkpoint"),
])
def test_resume_refuses_to_change_what_the_run_is(args, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--pair", "gaussian-shift", "--dim", "4", "--method", "ots", *FAST, "--out", str(out)]) == 0
    before = (out / "metrics.json").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", str(out), *args]) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert (out / "metrics.json").read_text() == before  # nothing overwritten


@pytest.mark.parametrize("bad,message", [("not.a.module:X", "cannot import module 'not.a.module'"),
                                          ("otsr.testing:Nope", "has no attribute 'Nope'"),
                                          ("otsr.testing:tiny_config", "is not a subclass of otsr.Pair")])
def test_bad_import_paths_are_named(bad, message, tmp_path, capsys):
    assert main(["train", "--pair", bad, *FAST, "--out", str(tmp_path / "run")]) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err


def test_every_boolean_flag_round_trips_both_ways():
    import dataclasses

    from otsr.cli import build_parser
    from otsr.config import TrainConfig

    flags = [f.name for f in dataclasses.fields(TrainConfig) if isinstance(f.default, bool)]
    assert flags  # compile, channels_last, reference_habits
    for name in flags:
        opt = "--" + name.replace("_", "-")
        for argv, want in (([opt], True), (["--no-" + opt[2:]], False), ([], None)):
            args = build_parser().parse_args(["train", *argv])
            assert getattr(args, name) is want, (name, argv)


def test_help_explains_each_field_and_version(capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "per-coordinate MSE" in text and "{gan,ots}" in text and "--no-compile" in text
    assert "vector pairs: 1024" in text and "SR pairs: 8" in text  # what each pair kind resolves to
    assert "BRIEF" not in text and "a comma list trains a bundle" in text
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("otsr ")
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    assert "`" not in top and all(c in top for c in ("train", "pairs", "bench", "upscale", "sr-demo"))


def test_version_answers_without_importing_torch():
    import subprocess
    import sys

    code = "import sys; from otsr.cli import main; main(['--version']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["otsr", out.split()[1], "False"]


def test_a_file_as_out_and_upscale_of_a_vector_run_are_one_line_errors(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["train", "--pair", "gaussian-shift", "--dim", "2", *FAST, "--out", str(afile)]) == EXIT_BAD_INPUT
    assert f"--out {afile} is a file, not a folder" in capsys.readouterr().err
    run = tmp_path / "vec"
    assert main(["train", "--pair", "gaussian-shift", "--dim", "2", *FAST, "--out", str(run)]) == 0
    capsys.readouterr()
    img = tmp_path / "x.png"
    import torch
    from torchvision.io import write_png
    write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(img))
    assert main(["upscale", str(img), "--checkpoint", str(run), "--out", str(tmp_path / "up")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "is not a super-resolution map" in err and "Traceback" not in err


def test_a_broken_user_pair_is_bad_input_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--pair", "otsr.testing:LinearPair", "--pair-param", "wrong_shape=true", *FAST,
                 "--out", str(out)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "sample_p(3) returned shape (3, 3), expected (3, 2)" in err and "Traceback" not in err
    assert not out.exists()


def test_a_user_pair_without_var_q_gets_an_estimate(tmp_path, capsys):
    import torch

    import otsr
    from otsr.testing import LinearPair

    class NoVar(LinearPair):
        var_q = otsr.Pair.var_q  # the default hook

    pair = NoVar()
    assert pair.var_q() == pytest.approx(2 * 4 / 12, rel=0.05)
    res = otsr.solve(pair, "ots", steps=10, eval_every=10, final_eval_samples=256, device="cpu", batch_size=32)
    assert res.status == "completed" and torch.isfinite(torch.tensor(res.metrics["l2_uvp"]))


def test_a_checkpoint_with_wrong_shapes_is_a_one_line_error(tmp_path, capsys):
    import torch

    out = tmp_path / "run"
    assert main(["train", "--pair", "gaussian-shift", "--dim", "4", *FAST, "--out", str(out)]) == 0
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    key = next(k for k, v in ckpt["map"].items() if v.ndim == 3)
    ckpt["map"][key] = torch.zeros(1, 3, 3)
    torch.save(ckpt, out / "checkpoint.pt")
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--steps", "30"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "cannot resume" in err and key in err and "shape (1, 3, 3)" in err and "Traceback" not in err


def test_a_full_disk_is_a_one_line_error_and_leaves_no_temporary_file(tmp_path, capsys):
    """A real full file system: a 600 KB tmpfs (needs root, as on the CI and development machines)."""
    import os
    import subprocess
    import tempfile

    mnt = Path(tempfile.mkdtemp(prefix="otsr-full-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], check=True)
    try:
        code = main(["train", "--pair", "gaussian-shift", "--dim", "64", *FAST, "--width", "256",
                     "--out", str(mnt / "run")])
        err = capsys.readouterr().err
        assert code == EXIT_BAD_INPUT and "no space left on the device" in err and "Traceback" not in err
        assert not [p for p in os.listdir(mnt / "run") if ".tmp" in p]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)
        mnt.rmdir()


def test_threads_default_to_one_and_bad_counts_fail_before_any_output(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    out = tmp_path / "run"
    assert main(["train", "--pair", "gaussian-shift", "--dim", "2", *FAST, "--threads", "0", "--out", str(out)]) \
        == EXIT_BAD_INPUT
    assert "--threads 0: must be at least 1" in capsys.readouterr().err and not out.exists()
    torch.set_num_threads(2)
    assert main(["train", "--pair", "gaussian-shift", "--dim", "2", *FAST, "--out", str(out)]) == 0
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert main(["train", "--pair", "gaussian-shift", "--dim", "2", *FAST, "--out", str(out), "--overwrite"]) == 0
    assert torch.get_num_threads() == 2


def test_late_checks_run_before_the_bar_and_name_their_flag(tmp_path, capsys, monkeypatch):
    import torch

    out = tmp_path / "run"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = ["train", "--pair", "gaussian-shift", "--dim", "2", *FAST]
    assert main([*args, "--device", "cuda", "--out", str(out)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err == "otsr: error: --device cuda: CUDA is not available on this machine (use --device cpu or auto)\n"
    assert not out.exists()
    assert main([*args, "--out", "/proc/otsr-x/run"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err == "otsr: error: --out /proc/otsr-x/run: cannot create the folder (No such file or directory)\n"


def test_a_bundle_prints_one_table_with_the_best_marked_and_a_no_op_resume_no_time(tmp_path, capsys):
    out = tmp_path / "lams"
    assert main(["train", "--pair", "gaussian-shift", "--dim", "4", "--method", "gan", "--lam", "0.1,1,10", *FAST,
                 "--out", str(out)]) == 0
    text = capsys.readouterr()
    lines = text.out.splitlines()
    from otsr.pairs import make_pair

    headline = list(make_pair("gaussian-shift", dim=4).headline().names())
    assert headline[0] == "l2_uvp"  # the table marks the best by the first headline metric
    assert lines[0].split() == ["member", "λ", *headline, "status"]
    rows = lines[1:4]
    assert [r.lstrip("* ").split()[0] for r in rows] == ["lam=0.1", "lam=1", "lam=10"]
    uvp = [float(r.lstrip("* ").split()[2]) for r in rows]
    best = [r.startswith("*") for r in rows]
    assert best.count(True) == 1 and best.index(True) == uvp.index(min(uvp))
    assert lines[4] == "* best: lowest l2_uvp"
    assert text.err.count("lam=0.1") == 1  # its evaluation at step 10; the final one is in the table only
    assert main(["train", "--resume", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("completed at step 20 (already complete)") == 3 and "(0 s)" not in text
