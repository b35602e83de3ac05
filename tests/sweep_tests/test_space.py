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
    (lambda d: d["methods"]["gan"].update(fixed={"lr": 1e-3}),
     r"methods.gan.fixed.lr: unknown key \(valid: batch_size"),
    (lambda d: d["methods"]["gan"].update(fixed={"gp": -1.0}),
     r"methods.gan.fixed: config key 'gp': -1.0 must be >= 0"),
    (lambda d: d["methods"].update(vae={}), r"methods.vae: unknown method"),
    (lambda d: d["pair"].update(params={"dim": 0}), r"pair: .*dim=0 is outside its range"),
    (lambda d: d["methods"]["gan"].update(fixed={"seed": 3}), r"methods.gan.fixed.seed: is set by the sweep"),
    (lambda d: d.update(objective={"metric": "ot_consistency", "mode": "max"}), r"computed only at the end"),
    (lambda d: d.update(resources={"max_concurrent": -3}), r"resources.max_concurrent: -3 must be an integer >= 0"),
    (lambda d: d.update(scheduler={"type": "asha", "reduction_factor": 1}), r"reduction_factor: 1 must be .* >= 2"),
    (lambda d: d.update(scheduler={"type": "asha", "also_rank_by": ["bias_typo"]}),
     r"scheduler.also_rank_by: 'bias_typo' is not computed at periodic evaluations"),
    (lambda d: d.update(scheduler={"type": "fifo", "also_rank_by": "bias_sliced_w2"}),
     r"scheduler.also_rank_by: only ASHA ranks members"),
    (lambda d: d.update(scheduler={"type": "asha", "also_rank_by": {"bias": 1}}),
     r"scheduler.also_rank_by: \{'bias': 1\} must be a list of metric names"),
    (lambda d: d.update(resources={"max_failures": -1}), r"resources.max_failures: -1 must be an integer >= 0"),
    (lambda d: d["methods"]["gan"].update(fixed={"device": "tpu"}), r"methods.gan.fixed: .*'tpu' is not supported"),
    (lambda d: d["methods"]["gan"].update(fixed={"map_model": "transformer"}), r"unknown model 'transformer'"),
    (lambda d: d["methods"]["gan"]["search"].update(beta1={"type": "float", "low": 0.5, "high": 1.5}),
     r"methods.gan.search.beta1: value 1.5 is not valid: .*'beta1'"),
    (lambda d: d["methods"]["gan"]["search"].update(width={"type": "categorical", "choices": [2, "abc"]}),
     r"methods.gan.search.width: value 'abc' is not valid"),
    (lambda d: d["methods"]["gan"]["search"]["lam"].update(log="false"), r"lam.log: 'false' must be true or false"),
    (lambda d: d.update(name="../../x"), r"name: '../../x' must be a plain name"),
    (lambda d: d.update(name="/abs/x"), r"name: '/abs/x' must be a plain name"),
    (lambda d: d.update(sampler={"type": "annealing"}), r"sampler: unknown sampler 'annealing'"),
    (lambda d: d.update(sampler={"type": "tpe", "n_startup": 3}), r"sampler: sampler 'tpe' has no option 'n_startup'"),
    (lambda d: d["methods"]["gan"].update(fixed={"device": "cuda"}), r"fixed.device: 'cuda' but resources.gpu is 0"),
    (lambda d: d["methods"]["ots"].update(fixed={"critic_steps": 5}),
     r"methods.ots.fixed.critic_steps: this key belongs to method 'gan' \(settings of 'ots': map_steps"),
    (lambda d: d["methods"]["gan"]["search"].update(map_steps={"type": "int", "low": 1, "high": 5}),
     r"methods.gan.search.map_steps: this key belongs to method 'ots'"),
])
def test_bad_spaces_name_file_key_and_value(mutate, match):
    d = _base()
    mutate(d)
    with pytest.raises(SpaceError, match=match):
        parse_space(d, "x.yaml")


def test_duplicate_yaml_keys_and_bad_overrides_are_errors(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\npair: {name: gaussian-shift}\nname: b\n")
    with pytest.raises(SpaceError, match=r"dup.yaml: not valid YAML \(line 3, column 1\): duplicate key 'name'"):
        load_space(path)
    with pytest.raises(SpaceError, match=r"--samples: 0 must be >= 1"):
        parse_space(_base(), "x.yaml", {"samples": 0})


def test_sampler_block_builds_the_named_optuna_sampler():
    from sweep.studies import make_sampler

    d = _base()
    d["sampler"] = {"type": "tpe", "n_startup_trials": 3}
    spec = parse_space(d, "x.yaml")
    sampler = make_sampler(spec.sampler, spec.methods[0].search)
    assert type(sampler).__name__ == "TPESampler" and sampler._n_startup_trials == 3
    d["sampler"] = {"type": "random", "seed": 7}
    assert type(make_sampler(parse_space(d, "x.yaml").sampler, {})).__name__ == "RandomSampler"


def test_quick_bias_actually_searches():
    """The main job spreads its GAN configurations over lambda's whole range (scrambled Sobol points), in bundles."""
    spec = load_space(REPO / "search_spaces/quick_bias.yaml")
    gan = next(m for m in spec.methods if m.method == "gan")
    assert spec.sampler["type"] == "qmc" and gan.samples >= 16 and gan.bundle > 1
    assert gan.search["lam"].log and gan.search["lam"].high / gan.search["lam"].low >= 1e4
    # halving keeps the least biased too: 'bias' names the pair's headline bias
    assert spec.scheduler["type"] == "asha" and spec.scheduler["also_rank_by"] == ["bias_sliced_w2"]


def test_metric_the_pair_cannot_compute():
    d = _base()
    d["pair"] = {"name": "convex-mixture", "params": {"dim": 4}}
    d["objective"] = {"metric": "shift"}  # only gaussian-shift reports the learned shift
    with pytest.raises(SpaceError, match="'shift' is not computed"):
        parse_space(d, "x.yaml")


USER_DATA = {"sr_aim19.yaml"}  # point at data the user brings; here they must fail naming the missing folder


def test_exponents_without_a_sign_are_numbers(tmp_path):
    """YAML 1.1 reads 1.0e5 as a string; spaces read it as the number (YAML 1.2), so lam.high: 1.0e5 works."""
    p = tmp_path / "exp.yaml"
    p.write_text(tiny_space(tmp_path).read_text().replace("high: 10.0", "high: 1.0e5"))
    spec = load_space(p)
    gan = next(m for m in spec.methods if m.method == "gan")
    assert gan.search["lam"].high == 1.0e5


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
    bad.write_text(tiny_space(tmp_path).read_text().replace("log: true", "log: maybe"))
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "methods.gan.search.lam" in err
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "mlflow.db").exists()
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "no such search-space file" in capsys.readouterr().err
    greedy = tmp_path / "greedy.yaml"
    greedy.write_text(tiny_space(tmp_path).read_text().replace("cpu: 0.5", "cpu: 64"))
    assert main(["run", str(greedy)]) == 2
    assert "a trial asks for CPU=64 but no node has that" in capsys.readouterr().err
    custom = tmp_path / "custom.yaml"
    custom.write_text(tiny_space(tmp_path, custom="{foo: 1}").read_text())
    assert main(["run", str(custom)]) == 2
    assert "foo=1" in capsys.readouterr().err
    assert main(["run", str(tiny_space(tmp_path)), "--tracking-uri", "ftp://example.invalid/x"]) == 2
    assert "unsupported scheme" in capsys.readouterr().err
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "mlflow.db").exists()


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
    assert out.returncode == 0
    assert "ok (gan, ots on convex-mixture; objective l2_uvp (min); bundles gan x8, ots x2)" in out.stdout


def test_a_user_pair_by_import_path_is_validated_before_ray_starts(tmp_path):
    text = tiny_space(tmp_path).read_text()
    user = tmp_path / "user.yaml"
    user.write_text(text.replace("{name: gaussian-shift, params: {dim: 4, shift: 2.0}}",
                                 '{name: "otsr.testing:GradientPair", params: {dim: 2}}')
                    .replace("objective: {metric: l2_uvp", "objective: {metric: l2_uvp"))
    spec = load_space(user)
    assert spec.pair["name"] == "otsr.testing:GradientPair" and spec.pair["params"]["dim"] == 2
    for name, match in (("otsr.testing:Nope", "has no attribute 'Nope'"),
                        ("no_such_module_xyz:Pair", "no_such_module_xyz"),
                        ("otsr.testing:tiny_config", "is not a subclass of otsr.Pair")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(user.read_text().replace("otsr.testing:GradientPair", name))
        with pytest.raises(SpaceError, match=f"bad.yaml: pair.*{match}"):
            load_space(bad)


@pytest.mark.parametrize("metric,mode", [("cos", "max"), ("ot_consistency", "max"), ("l2_uvp", "min"),
                                         ("bias_sliced_w2", "min")])
def test_objective_direction_defaults_to_the_metric_registry(tmp_path, metric, mode):
    """`objective: {metric: cos}` is maximised (it once was silently minimised)."""
    space = tiny_space(tmp_path)
    space.write_text(space.read_text().replace("objective: {metric: l2_uvp, mode: min}",
                                               f"objective: {{metric: {metric}}}\nscheduler: {{type: fifo}}"
                                               ).replace("scheduler: {type: fifo}\nresources", "resources", 1))
    assert load_space(space).objectives[0].mode == mode


@pytest.mark.parametrize("edit,message", [
    (("samples: 3", "samples: 3\n    bundle: 0"), "bundle: 0 must be an integer in [1, 1024]"),
    (("samples: 3", "samples: 3\n    bundle: 4"), "members of a bundle share 'width'"),
    (("steps: 60", "steps: 1000000000000000"), "budget.steps: 1000000000000000 must be an integer in"),
    (("samples: 3", "samples: 100000000000"), "samples: 100000000000 must be an integer in"),
    (("steps: 60", "steps: 60.0"), "budget.steps: 60.0 is not an integer"),
])
def test_bundle_and_budget_bounds_are_checked(tmp_path, edit, message):
    space = tiny_space(tmp_path)
    text = space.read_text().replace(*edit, 1)
    if "bundle: 4" in text:  # a bundled method may search only what its members can differ in
        text = text.replace("lam: {type: float, low: 1.0e-2, high: 10.0, log: true}", "width: {type: int, low: 8, "
                            "high: 16}").replace("width: 16, depth: 2, critic_steps", "depth: 2, critic_steps", 1)
    space.write_text(text)
    with pytest.raises(SpaceError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_space(space)


def test_messages_name_the_file_and_the_problem_in_one_line(tmp_path):
    binary = tmp_path / "utf16.yaml"
    binary.write_bytes("name: x\n".encode("utf-16"))
    with pytest.raises(SpaceError, match=r"utf16.yaml: not a UTF-8 text file"):
        load_space(binary)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [x\n")
    with pytest.raises(SpaceError) as e:
        load_space(broken)
    assert "\n" not in str(e.value) and "broken.yaml: not valid YAML (line" in str(e.value)
    for bad, message in (('"4"', "dim='4' is not an integer"), ("2.5", "dim=2.5 is not an integer"),
                         ("true", "dim=True is not an integer")):
        space = tiny_space(tmp_path)
        space.write_text(space.read_text().replace("{dim: 4, shift: 2.0}", f"{{dim: {bad}, shift: 2.0}}"))
        with pytest.raises(SpaceError, match=message):
            load_space(space)
    d = _base()
    d["sampler"] = {"type": "tpe", "n_startup_trials": -1}
    with pytest.raises(SpaceError, match="n_startup_trials: -1 must be an integer >= 0"):
        parse_space(d, "x.yaml")


def test_the_pair_is_built_last_so_a_later_error_costs_no_data(tmp_path, monkeypatch):
    """root: demo builds the SR demo set; a typo elsewhere in the file is reported without building it."""
    monkeypatch.setenv("OTSR_DATA", str(tmp_path / "data"))
    d = _base()
    d["pair"] = {"name": "sr-folders", "params": {"root": "demo", "hr_crop": 32, "workers": 0}}
    d["budget"]["steps"] = "many"
    with pytest.raises(SpaceError, match="budget.steps: 'many' is not an integer"):
        parse_space(d, "x.yaml")
    assert not (tmp_path / "data").exists()


def test_a_user_pair_whose_sampler_raises_fails_validation_naming_the_hook(tmp_path):
    d = _base()
    d["pair"] = {"name": "otsr.testing:LinearPair", "params": {"wrong_shape": True}}
    with pytest.raises(SpaceError, match=r"pair: .*sample_p\(3\) returned shape \(3, 3\)"):
        parse_space(d, "x.yaml")


def test_threads_never_oversubscribe_the_cpus_ray_offers():
    """--threads N raises a trial's CPU reservation to N (Ray then packs trials x threads <= CPUs); N beyond a
    reservation given next to it is an error; by default a trial's threads are its CPUs (1 in the shipped spaces)."""
    res = parse_space(_base(), "x.yaml").resources
    assert res["threads"] == 0 and res["cpu"] == 1  # 0: the trial's whole CPUs
    spec = parse_space(_base(), "x.yaml", {"threads": 2})
    assert spec.resources["threads"] == 2 and spec.resources["cpu"] == 2
    d = _base()
    d["resources"] = {"cpu": 1}
    assert parse_space(d, "x.yaml", {"threads": 3}).resources["cpu"] == 3  # the file's cpu yields to --threads
    with pytest.raises(SpaceError, match=r"2 threads per trial on 1 reserved CPU\(s\) would oversubscribe"):
        parse_space(_base(), "x.yaml", {"threads": 2, "cpu": 1})
    d["resources"] = {"cpu": 1, "threads": 4}
    with pytest.raises(SpaceError, match=r"resources.threads: 4 threads per trial"):
        parse_space(d, "x.yaml")
