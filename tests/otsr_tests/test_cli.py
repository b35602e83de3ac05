import json

import pytest

from otsr.cli import EXIT_BAD_INPUT, EXIT_DIVERGED, main

FAST = ["--steps", "20", "--batch-size", "32", "--log-every", "5", "--eval-every", "10", "--width", "16",
        "--final-eval-samples", "256", "--checkpoint-every", "10", "--device", "cpu"]


@pytest.mark.parametrize("args,message", [
    (["--pair", "nope"], "unknown pair 'nope'"),
    (["--method", "vae"], "unknown method 'vae'"),
    (["--method", "gan", "--lam", "-1"], "lambda=-1.0 must be >= 0"),
    (["--pair", "convex-mixture", "--dim", "300"], "dim=300 is outside its range"),
    (["--pair-param", "shift"], "expected KEY=VALUE"),
    (["--pair-param", "shift=abc"], "'abc' is not a valid float"),
])
def test_bad_input_fails_before_any_output(args, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *args, *FAST, "--out", str(out)]) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_train_then_resume_with_more_steps(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--pair", "gaussian-shift", "--dim", "4", "--method", "gan", "--lam", "2", *FAST,
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "completed" and printed["step"] == 20
    assert {p.name for p in out.iterdir()} >= {"config.json", "checkpoint.pt", "metrics.json", "map.png"}
    assert main(["train", "--out", str(out), *FAST]) == EXIT_BAD_INPUT  # refuses to clobber a finished run
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--steps", "30"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["step"] == 30 and printed["method"] == "gan"
    assert json.loads((out / "config.json").read_text())["train"]["lam"] == 2.0


def test_divergence_exit_code(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--pair", "gaussian-shift", "--dim", "4", *FAST, "--lr-map", "1e30",
                 "--lr-critic", "1e30", "--out", str(out)])
    printed = json.loads(capsys.readouterr().out)
    assert code == EXIT_DIVERGED and printed["status"] == "diverged"
    assert printed["message"].startswith("diverged at step ")
    assert not (out / "metrics.json").exists()


def test_pairs_lists_every_pair(capsys):
    assert main(["pairs"]) == 0
    text = capsys.readouterr().out
    for name in ("gaussian-shift", "gaussian", "convex-mixture", "degraded-images"):
        assert f"{name}:" in text
