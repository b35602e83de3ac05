"""cluster/*.yaml pass Ray's own offline validation; typos and type errors are caught."""

from pathlib import Path

import pytest
import yaml

from sweep.cluster_config import ClusterConfigError, validate_cluster_config

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"


@pytest.mark.parametrize("name", ["aws", "gcp", "onprem"])
def test_shipped_cluster_configs_validate(name):
    full = validate_cluster_config(CLUSTER / f"{name}.yaml")
    assert full["cluster_name"].startswith("otsr")
    assert any("pip install" in c and "otsr" in c for c in full["setup_commands"])


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
])
def test_broken_configs_are_rejected_with_the_reason(tmp_path, mutate, match):
    with pytest.raises(ClusterConfigError, match=match):
        validate_cluster_config(_broken(tmp_path, mutate))
