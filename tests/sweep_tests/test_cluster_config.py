"""cluster/*.yaml pass Ray's own offline validation; typos and type errors are caught."""

from pathlib import Path

import pytest
import yaml

from sweep.cluster_config import ClusterConfigError, plan_nodes, validate_cluster_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("name", ["aws", "gcp", "onprem"])
def test_shipped_cluster_configs_validate(name):
    full = validate_cluster_config(CLUSTER / f"{name}.yaml")
    assert full["cluster_name"].startswith("otsr")
    assert any("pip install" in c and "otsr" in c for c in full["setup_commands"])
    starts = [c for c in full["head_start_ray_commands"] + full["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_worker_niceness=0 ray start" in c for c in starts)  # trials not starved


def _broken(tmp_path, mutate):
    d = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    mutate(d)
    p = tmp_path / "broken.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.update(head_node_typ=d.pop("head_node_type")), "'head_node_typ' was unexpected"),
    (lambda d: (h := d["available_node_types"]["head"]).update(node_confg=h.pop("node_config")),
     "'node_config' is a required property"),
    (lambda d: d.update(max_workers="eight"), "'eight' is not of type 'integer'"),
    (lambda d: d.update(head_start_ray_commands=["ray start --head"]), "no MLflow tracking server"),
    (lambda d: d["head_start_ray_commands"].append("mlflow server --host 0.0.0.0"), "binds 0.0.0.0"),
    (lambda d: d["worker_start_ray_commands"].__setitem__(1, "ray start --address=$RAY_HEAD_IP:6379"),
     "RAY_AUTH_MODE=token"),
    (lambda d: d["file_mounts"].pop("/home/ubuntu/.ray/auth_token"), "auth token"),
    (lambda d: (d.pop("rsync_filter"), d.pop("rsync_exclude")), "rsync_filter"),
    (lambda d: d["available_node_types"]["gpu_worker"].update(resources={}), "give CPU and GPU explicitly"),
])
def test_broken_configs_are_rejected_with_the_reason(tmp_path, mutate, match):
    with pytest.raises(ClusterConfigError, match=match):
        validate_cluster_config(_broken(tmp_path, mutate))


@pytest.mark.parametrize("name", ["aws", "gcp"])
@pytest.mark.parametrize("space", SPACES, ids=[p.stem for p in SPACES])
def test_ray_places_every_shipped_space_on_the_cluster(name, space):
    """Ray's own node-selection code finds a node type for one trial of each search space (GPU shares included)."""
    full = validate_cluster_config(CLUSTER / f"{name}.yaml")
    res = yaml.safe_load(space.read_text()).get("resources", {})
    demand = {"CPU": res.get("cpu", 1), **({"GPU": res["gpu"]} if res.get("gpu") else {})}
    add, left = plan_nodes(full, [demand])
    assert not left, f"{space.name}: no node type of {name}.yaml fits {demand}"
    wants = "gpu_worker" if demand.get("GPU") else "cpu_worker"
    assert add == {wants: 1}


def test_node_selection_finds_nothing_for_empty_resources(tmp_path):
    """The shipped bug this guards against: `resources: {}` made GPU-share trials wait forever."""
    from ray.autoscaler._private.util import prepare_config

    raw = yaml.safe_load((CLUSTER / "gcp.yaml").read_text())
    raw["available_node_types"]["gpu_worker"]["resources"] = {}
    add, left = plan_nodes(prepare_config(raw), [{"CPU": 2, "GPU": 0.25}])
    assert left == [{"CPU": 2, "GPU": 0.25}] and not add


def test_onprem_uses_the_resources_each_machine_reports():
    full = validate_cluster_config(CLUSTER / "onprem.yaml")
    assert list(full["available_node_types"]) == ["local.cluster.node"]
    assert full["available_node_types"]["local.cluster.node"]["resources"] == {}


def test_validate_command_checks_a_cluster_config_offline(tmp_path, capsys):
    from sweep.cli import main

    space = CLUSTER.parent / "search_spaces" / "gan_lambda_bias.yaml"
    assert main(["validate", str(space), "--cluster", str(CLUSTER / "aws.yaml")]) == 0
    out = capsys.readouterr().out
    assert "Ray's own validation" in out and "is placed on gpu_worker" in out
    broken = _broken(tmp_path, lambda d: d["head_start_ray_commands"].clear())
    assert main(["validate", str(space), "--cluster", str(broken)]) == 2
    assert "head_start_ray_commands" in capsys.readouterr().err
