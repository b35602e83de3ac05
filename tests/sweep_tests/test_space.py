"""Search-space validation: every mistake is named (file, key, value) before anything runs."""

import subprocess
import sys
from pathlib import Path

import optuna.distributions as od
import pytest

from sweep.cli import main
from sweep.space import SpaceError, load_space, parse_space
from tests.sweep_tests.conftest import tiny_space

REPO = Path(__file__).resolve().parents[2]


def _base():
    return {"pair": {"name": "gaussian-shift", "params": {"dim": 4}},
            "objective": {"metric": "l2_uvp", "mode": "min"}, "budget": {"steps": 100},
            "methods": {"gan": {"samples": 2, "search": {"lam": {"type": "float", "low": 0.01, "high": 10,
                                                                 "log": True}}}, "ots": {}}}


def test_short_form_becomes_optuna_distributions():
    spec = parse_space(_base(), "x.yaml")
    gan = spec.methods[0]
    assert gan.search["lam"] == od.FloatDistribution(0.01, 10, log=True)
    assert spec.methods[1].method == "ots" and not spec.methods[1].search
    assert spec.pair["params"]["shift"] == 4.0  # the full pair spec, defaults included


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.update(budgett={}), r"x.yaml: budgett: unknown key"),
    (lambda d: d["methods"]["gan"]["search"]["lam"].update(type="loguniform"),
     r"methods.gan.search.lam.type: unknown distribution 'loguniform'"),
    (lambda d: d["methods"]["gan"]["search"]["lam"].update(low=0.0),
     r"methods.gan.search.lam: .*low.*0\.0"),
    (lambda d: d.update(objective={"metric": "shift_typo"}), r"objective.metric: 'shift_typo' is not computed"),
    (lambda d: d["methods"]["gan"].update(fixed={"lr": 1e-3}), r"methods.gan.fixed.lr: unknown trainer parameter"),
    (lambda d: d["methods"]["gan"].update(fixed={"gp": -1.0}), r"methods.gan: config key 'gp'"),
    (lambda d: d["methods"].update(vae={}), r"methods.vae: unknown method"),
    (lambda d: d["pair"].update(params={"dim": 0}), r"pair: .*dim=0 is outside its range"),
    (lambda d: d["methods"]["gan"].update(fixed={"seed": 3}), r"methods.gan.fixed.seed: is set by the sweep"),
    (lambda d: d.update(objective={"metric": "bias_frechet"}), r"computed only at the end"),
])
def test_bad_spaces_name_file_key_and_value(mutate, match):
    d = _base()
    mutate(d)
    with pytest.raises(SpaceError, match=match):
        parse_space(d, "x.yaml")


def test_metric_the_pair_cannot_compute():
    d = _base()
    d["pair"] = {"name": "convex-mixture", "params": {"dim": 4}}
    d["objective"] = {"metric": "shift"}  # only gaussian-shift reports the learned shift
    with pytest.raises(SpaceError, match="'shift' is not computed"):
        parse_space(d, "x.yaml")


USER_DATA = {"sr_aim19.yaml"}  # point at data the user brings; here they must fail naming the missing folder


@pytest.mark.parametrize("path", sorted(p for p in (REPO / "search_spaces").glob("*.yaml") if p.name not in USER_DATA),
                         ids=lambda p: p.name)
def test_shipped_spaces_are_valid(path):
    spec = load_space(path)
    assert {m.method for m in spec.methods} >= {"ots"}


def test_user_data_space_names_the_missing_folder(tmp_path):
    with pytest.raises(SpaceError, match="sr_aim19.yaml: pair: image folder /data/aim19/train_lr does not exist"):
        load_space(REPO / "search_spaces/sr_aim19.yaml")
    text = (REPO / "search_spaces/sr_aim19.yaml").read_text()
    from otsr.sr.demo import build_demo

    root = build_demo(tmp_path / "aim19-like")
    spec = load_space_text(tmp_path, text.replace("/data/aim19", str(root)))
    assert spec.pair["params"]["hr_crop"] == 128 and spec.objectives[0].metric == "psnr"


def load_space_text(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return load_space(path)


def test_cli_rejects_a_bad_file_before_launching(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(tiny_space(tmp_path).read_text().replace("log: true", "log: true, low: 0.0"))
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "methods.gan.search.lam" in err
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "mlflow.db").exists()
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "no such search-space file" in capsys.readouterr().err


def test_unreachable_tracking_server_fails_before_any_trial(tmp_path, monkeypatch, capsys):
    import socket

    monkeypatch.chdir(tmp_path)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["run", str(tiny_space(tmp_path)), "--tracking-uri", f"http://127.0.0.1:{port}"])
    assert code == 2
    assert f"MLflow tracking server http://127.0.0.1:{port} is unreachable" in capsys.readouterr().err
    assert not (tmp_path / "sweeps").exists()


def test_validate_command():
    out = subprocess.run([sys.executable, "-m", "sweep.cli", "validate", str(REPO / "search_spaces/quick_bias.yaml")],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "ok (gan, ots on convex-mixture)" in out.stdout
