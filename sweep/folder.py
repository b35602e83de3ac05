"""A sweep folder and its state file: what ran, what is missing, what each member configuration became.

Layout: ``spec.yaml`` (the space as given), ``resolved.json`` (what the report reads), ``state.json`` (phases,
members, the MLflow ids, options), ``members/<key>/`` (each member configuration's ordinary run folder: config,
checkpoint, result, metrics, curves, map), ``optuna.db`` (the studies), ``ray/`` (Tune's own files, never read
back), the tracking queue and the report files. Resume reads only ``state.json`` and the members' checkpoints
(tensors only): nothing in a sweep folder is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from otsr.checkpoint import atomic_write_json
from sweep.records import ENDED, MemberRecord

STATE = "state.json"
SPEC = "spec.yaml"
RESOLVED = "resolved.json"
MEMBERS = "members"
__all__ = ["ENDED", "MEMBERS", "RESOLVED", "SPEC", "STATE", "SweepState", "SweepStateError"]


class SweepStateError(ValueError):
    """The folder is not a sweep, or its state file is damaged; the message names the file."""


class SweepState:
    """The parsed ``state.json`` of a sweep folder, saved atomically on ``save``."""

    def __init__(self, folder: Path, data: dict[str, Any]):
        self.folder, self.data = Path(folder), data
        data["members"] = {k: m if isinstance(m, MemberRecord) else MemberRecord.from_json(m)
                           for k, m in data.get("members", {}).items()}

    @classmethod
    def create(cls, folder: Path, **fields: Any) -> SweepState:
        """A new state with the given fields (tracking_uri, experiment_id, tags, overrides, ...)."""
        state = cls(folder, {"phases": {}, "best": {}, "members": {}, "status": "created", **fields})
        state.save()
        return state

    @classmethod
    def load(cls, folder: Path) -> SweepState:
        """Read ``state.json``; a clear error when the folder is not a sweep or the file is damaged."""
        path = Path(folder) / STATE
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a sweep folder (no {STATE})")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SweepStateError(f"{path}: damaged state file ({e}); the sweep cannot be resumed from it") from None
        for key in ("tracking_uri", "experiment_id", "phases", "best", "overrides", "members"):
            if key not in data:
                raise SweepStateError(f"{path}: damaged state file (no {key!r})")
        try:
            return cls(folder, data)
        except (TypeError, ValueError) as e:
            raise SweepStateError(f"{path}: damaged member record ({e}); the sweep cannot be resumed from it") from None

    def save(self) -> None:
        """Write ``state.json`` atomically."""
        atomic_write_json(self.folder / STATE, {**self.data, "members": {k: m.to_json() for k, m in
                                                                         self.data["members"].items()}})

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        """``dict.get`` on the state."""
        return self.data.get(key, default)

    # --- phases and members ---

    def phase(self, name: str) -> dict[str, Any]:
        """The record of phase ``name`` (created pending)."""
        return self.data["phases"].setdefault(name, {"status": "pending", "bundles": {}})

    def members(self, phase: str | None = None) -> dict[str, MemberRecord]:
        """Member records (of one phase, or all), by key."""
        return {k: m for k, m in self.data["members"].items() if phase is None or m["phase"] == phase}

    def member(self, key: str) -> MemberRecord:
        """One member's record."""
        return self.data["members"][key]

    def add_member(self, phase: str, settings: dict[str, Any], role: str, optuna: int | None = None) -> str:
        """Register a member configuration of ``phase``; returns its key (``<phase>-<nnn>``)."""
        n = len(self.members(phase))
        key = f"{phase}-{n:03d}"
        self.data["members"][key] = MemberRecord(phase, settings, role, optuna)
        return key

    def member_dir(self, key: str) -> Path:
        """The member's run folder."""
        return self.folder / MEMBERS / key

    def unfinished(self, phase: str) -> list[str]:
        """Keys of the phase's members that have not ended."""
        return [k for k, m in self.members(phase).items() if not m.ended]
