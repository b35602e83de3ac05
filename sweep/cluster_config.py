"""Offline validation of Ray cluster configs (cluster/*.yaml) with Ray's own schema and defaults.

Wraps Ray's private autoscaler API in this one place: if Ray moves it, only this module changes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REQUIRED_FOR_OTSR = ("setup_commands", "head_start_ray_commands", "file_mounts")


class ClusterConfigError(ValueError):
    """A cluster config fails Ray's validation or otsr's own requirements."""


def validate_cluster_config(path: str | Path) -> dict[str, Any]:
    """Validate a cluster YAML as `ray up` would before contacting any cloud; return the filled config."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    path = Path(path)
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ClusterConfigError(f"{path}: not a mapping")
    try:
        full = prepare_config(copy.deepcopy(raw))
        validate_config(full)
    except Exception as e:  # Ray raises jsonschema and ValueError subclasses
        msg = str(e).splitlines()[0]
        raise ClusterConfigError(f"{path}: {type(e).__name__}: {msg}") from None
    for key in REQUIRED_FOR_OTSR:
        if not raw.get(key):
            raise ClusterConfigError(f"{path}: {key}: missing (otsr needs the project installed and started)")
    head = " ".join(raw["head_start_ray_commands"])
    if "mlflow server" not in head:
        raise ClusterConfigError(f"{path}: head_start_ray_commands: no MLflow tracking server started on the head")
    if "0.0.0.0" in head:
        raise ClusterConfigError(f"{path}: head_start_ray_commands: a server binds 0.0.0.0 (reachable from outside)")
    if "--host 127.0.0.1" not in head:
        raise ClusterConfigError(f"{path}: head_start_ray_commands: MLflow must listen on 127.0.0.1 (the driver on "
                                 "the head is its only client; users reach it through `ray attach -p 5000`)")
    text = yaml.safe_dump(raw)
    if "RAY_AUTH_MODE=disabled" in text:
        raise ClusterConfigError(f"{path}: Ray token auth must stay on for clusters")
    starts = raw["head_start_ray_commands"] + raw.get("worker_start_ray_commands", [])
    for cmd in starts:
        if "ray start" in cmd and "RAY_AUTH_MODE=token" not in cmd:
            raise ClusterConfigError(f"{path}: '{cmd}': start Ray with RAY_AUTH_MODE=token (token auth)")
    if not any("auth_token" in str(k) for k in raw["file_mounts"]):
        raise ClusterConfigError(f"{path}: file_mounts: the Ray auth token (~/.ray/auth_token) is not copied to nodes")
    if not (raw.get("rsync_filter") or raw.get("rsync_exclude")):
        raise ClusterConfigError(f"{path}: rsync_filter/rsync_exclude: missing, so file_mounts would copy .venv, "
                                 "sweeps/ and MLflow files to every node")
    if raw["provider"].get("type") != "local":
        for name, node in raw.get("available_node_types", {}).items():
            res = node.get("resources")
            if not res or "CPU" not in res or "GPU" not in res:
                raise ClusterConfigError(f"{path}: available_node_types.{name}.resources: give CPU and GPU "
                                         f"explicitly (got {res!r}); the autoscaler cannot pick a node type otherwise")
    return full


def plan_nodes(full: dict[str, Any], demands: list[dict[str, float]]) -> tuple[dict[str, int], list[dict]]:
    """Which node types Ray's autoscaler would launch for ``demands`` (e.g. one trial's ``{"CPU": 2, "GPU": 0.25}``),
    computed by Ray's own scheduler code on a filled config; returns (nodes to add, demands left unplaced)."""
    import functools

    from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
    from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer, get_nodes_for

    scorer = functools.partial(_default_utilization_scorer,
                               node_availability_summary=NodeAvailabilitySummary(node_availabilities={}))
    add, left = get_nodes_for(full["available_node_types"], {}, full["head_node_type"], full.get("max_workers", 0) + 1,
                              demands, scorer)
    return dict(add), left
