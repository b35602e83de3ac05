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
    if "RAY_AUTH_MODE=disabled" in yaml.safe_dump(raw):
        raise ClusterConfigError(f"{path}: Ray token auth must stay on for clusters")
    return full
