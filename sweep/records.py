"""The sweep's typed records: how a member configuration stands (``MemberStatus``), what a trial tells the driver
about one member (``MemberReport``, inside ``tune.report``) and what the driver keeps of it (``MemberRecord``, in
``state.json``). Each has one JSON form; records of state files written before these types existed still load.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any


class MemberStatus(str, enum.Enum):
    """How a member configuration stands (a ``str``: it compares and serialises as its value)."""

    PENDING = "pending"  # recorded, not started
    RUNNING = "running"
    COMPLETED = "completed"  # trained to its last step
    STOPPED = "stopped"  # stopped early by ASHA
    DIVERGED = "diverged"  # a non-finite loss
    ERROR = "error"  # its trial failed after its retries
    INTERRUPTED = "interrupted"  # cut by a stop signal; resumable

    def __str__(self) -> str:
        return self.value

    @property
    def ended(self) -> bool:
        """Whether the member needs nothing more."""
        return self in ENDED

    @property
    def failed(self) -> bool:
        """Diverged or errored."""
        return self in (MemberStatus.DIVERGED, MemberStatus.ERROR)

    @property
    def mlflow_status(self) -> str:
        """The MLflow run status of an ended member (KILLED: stopped early, or interrupted)."""
        return {"completed": "FINISHED", "stopped": "KILLED", "diverged": "FAILED", "error": "FAILED",
                "interrupted": "KILLED"}.get(self.value, "RUNNING")

    @property
    def outcome(self) -> str:
        """The ``otsr.outcome`` tag of the member's run."""
        return "stopped_early" if self is MemberStatus.STOPPED else self.value


ENDED = (MemberStatus.COMPLETED, MemberStatus.STOPPED, MemberStatus.DIVERGED, MemberStatus.ERROR)


@dataclasses.dataclass
class MemberReport:
    """What a trial reports to the driver about one member at an evaluation (or at its end)."""

    status: MemberStatus
    step: int
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # the latest evaluation
    train: list[dict[str, float]] = dataclasses.field(default_factory=list)  # loss readouts since the last report
    evals: list[dict[str, float]] = dataclasses.field(default_factory=list)  # evaluations not yet reported
    message: str = ""  # why it ended (diverged at step N, stopped early at step N)

    def to_json(self) -> dict[str, Any]:
        """The plain dict that travels in ``tune.report``."""
        return {**dataclasses.asdict(self), "status": self.status.value}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MemberReport:
        """The inverse of ``to_json``."""
        return cls(MemberStatus(d.get("status", "running")), int(d.get("step", 0)), dict(d.get("metrics") or {}),
                   list(d.get("train") or []), list(d.get("evals") or []), str(d.get("message") or ""))


@dataclasses.dataclass
class MemberRecord:
    """The driver's record of one member configuration in ``state.json``.

    Item access (``rec["status"]``) reads and writes the fields too, as code and tools written against the plain
    records of earlier state files do.
    """

    phase: str
    settings: dict[str, Any]  # what the member sets beyond its phase's shared settings (searched values, seed)
    role: str  # MLflow role tag: search / best / grid / the method's name
    optuna: int | None = None  # Optuna trial number (search phases)
    status: MemberStatus = MemberStatus.PENDING
    step: int = 0
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)  # the latest (finite) metrics
    objective: dict[str, float] = dataclasses.field(default_factory=dict)  # objective value by step (Optuna)
    ranks: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)  # step -> also_rank_by values
    logged_eval: int = -1  # last step whose evaluation reached MLflow's queue
    logged_train: int = -1  # last step whose loss readout reached MLflow's queue
    reason: str = ""
    optuna_id: int | None = None  # Optuna's storage id, to set attributes after a restart
    run_id: str = ""
    node_id: str = ""
    resumed_from: int = 0
    uploaded: bool = False  # its run folder is queued as artifacts
    told: bool = False  # its Optuna trial is told

    def __post_init__(self):
        self.status = MemberStatus(self.status)

    def to_json(self) -> dict[str, Any]:
        """The state file's JSON object."""
        return {**dataclasses.asdict(self), "status": self.status.value}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MemberRecord:
        """Read a record; older state files lack the later optional fields (they take their defaults)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @property
    def ended(self) -> bool:
        """Whether the member needs nothing more."""
        return self.status.ended

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self.__dataclass_fields__:
            raise KeyError(f"member records have no field {key!r}")
        setattr(self, key, MemberStatus(value) if key == "status" else value)

    def __contains__(self, key: str) -> bool:
        return key in self.__dataclass_fields__

    def get(self, key: str, default: Any = None) -> Any:
        """Item access with a default."""
        return getattr(self, key, default)
