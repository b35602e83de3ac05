"""PairSpec: the one way a pair's identity is written down (configs, checkpoints, sweeps) and built again."""

from __future__ import annotations

import dataclasses
from typing import Any

from otsr.pairs._base import Pair


@dataclasses.dataclass(frozen=True)
class PairSpec:
    """A pair by name (registry name or ``module:Class`` import path) and constructor parameters."""

    name: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    def build(self) -> Pair:
        """Construct the pair (unknown names and parameters raise, naming them)."""
        from otsr.pairs._registry import make_pair

        return make_pair(self.name, **self.params)

    def to_dict(self) -> dict[str, Any]:
        """Plain ``{"name": ..., "params": {...}}`` for JSON, YAML, checkpoints and Tune configs."""
        return {"name": self.name, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: Any, where: str = "pair") -> PairSpec:
        """Read ``{"name": ..., "params": {...}}``; a malformed spec raises naming ``where``."""
        if not isinstance(d, dict) or not isinstance(d.get("name"), str):
            raise ValueError(f"{where}: expected {{name: ..., params: {{...}}}}, got {d!r}")
        unknown = sorted(set(d) - {"name", "params"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown} (valid: name, params)")
        params = d.get("params") or {}
        if not isinstance(params, dict):
            raise ValueError(f"{where}.params: expected a mapping, got {params!r}")
        return cls(d["name"], dict(params))

    def describe(self) -> str:
        """``name(k=v, ...)`` for logs and reports."""
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"
