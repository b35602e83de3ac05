"""Where a phase's member configurations come from, and how they are handed to Tune K at a time.

A search phase asks its persistent Optuna study (``optuna.db``) for K suggestions per Tune trial (ask/tell:
each member is its own Optuna trial, told when it ends); a fixed phase (seeds, grid, best) knows its members
up front. Either way members are recorded in ``state.json`` before they train and grouped into bundles; a
resumed phase relaunches its unfinished bundles first (from their checkpoints), then continues.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import optuna
from ray.tune.search import Searcher

from sweep.folder import SweepState
from sweep.records import MemberStatus
from sweep.space import MethodSpec, SweepSpec
from sweep.studies import StudyTeller, make_sampler, open_study

PAIR_KEY = "pair"


@dataclasses.dataclass
class Phase:
    """One Tune experiment of the sweep."""

    name: str
    method: MethodSpec
    kind: str  # 'search', 'seeds' (the fixed config per seed), 'grid' or 'best' (best searched config, other seeds)

    @property
    def role(self) -> str:
        """The MLflow ``role`` of its members: search / best / grid, or the method's name for a plain baseline."""
        return {"search": "search", "best": "best", "grid": "grid"}.get(self.kind, self.method.method)

    @property
    def searched(self) -> list[str]:
        """Names that differ between its members' configurations (besides the seed)."""
        return sorted(self.method.search) + sorted(self.method.grid)


def plan_groups(spec: SweepSpec, slots: int | None = None) -> list[list[Phase]]:
    """Phases that can run side by side, in order: the searches first, then the reruns of their chosen
    configurations (they depend on their search). A fixed baseline (it depends on nothing) joins the searches when
    their trials leave some of the ``slots`` (trials Ray can run at once; None: unknown) free, else the reruns,
    which alone would leave cores idle at the end (the main job: 2 search bundles fill 2 cores, then OTS runs
    beside the GAN's rerun)."""
    phases = plan_phases(spec)
    searches = [p for p in phases if p.kind == "search"]
    baselines = [p for p in phases if p.kind not in ("search", "best")]
    reruns = [p for p in phases if p.kind == "best"]
    search_trials = sum(math.ceil(p.method.samples / p.method.bundle) for p in searches)
    if slots is None or not searches or not reruns or search_trials < slots:
        groups = [searches + baselines, reruns]
    else:
        groups = [searches, baselines + reruns]
    return [sorted(g, key=phases.index) for g in groups if g]


def plan_phases(spec: SweepSpec) -> list[Phase]:
    """The phases of a sweep, in order."""
    phases = []
    for m in spec.methods:
        if m.search:
            phases.append(Phase(m.method, m, "search"))
            if spec.seeds > 1 and not spec.multi_objective:
                phases.append(Phase(f"{m.method}-best", m, "best"))
        else:
            phases.append(Phase(m.method, m, "grid" if m.grid else "seeds"))
    return phases


class PhaseRun:
    """The members of one phase: created (asked of Optuna, or listed), bundled, told when they end."""

    def __init__(self, spec: SweepSpec, phase: Phase, state: SweepState, asha_name: str | None = None,
                 teller: StudyTeller | None = None):
        self.spec, self.phase, self.state, self.asha_name = spec, phase, state, asha_name
        self.teller = teller  # writes the study off the caller's thread (None: in it)
        self.record = state.phase(phase.name)
        self.k = phase.method.bundle
        self.study = self._open_study() if phase.kind == "search" else None
        if phase.kind != "search" and not self.record["bundles"]:
            self._plan_fixed()
        self.queue = [b for b, keys in self.record["bundles"].items()
                      if any(not state.member(k).ended for k in keys)]  # resume these first
        self.trials: dict[str, str] = {}  # Tune trial id -> bundle key
        self.asha_actor = None  # the phase's rung actor, when it has one

    # --- members ---

    def _open_study(self) -> optuna.Study:
        objectives = [dataclasses.asdict(o) for o in self.spec.objectives]
        study = open_study(self.state.folder, f"{self.state.folder.name}/{self.phase.name}", objectives,
                           make_sampler(self.spec.sampler, self.phase.method.search))
        return study

    def base_settings(self) -> dict[str, Any]:
        """The trainer settings every member of the phase shares."""
        spec = self.spec
        return {**self.phase.method.fixed, "method": self.phase.method.method, "steps": spec.steps,
                "eval_every": spec.eval_every, "checkpoint_every": spec.eval_every}

    def _plan_fixed(self) -> None:
        seeds = list(range(self.spec.seeds)) if self.phase.kind != "best" else list(range(1, self.spec.seeds))
        best = self.state["best"].get(self.phase.method.method) or {} if self.phase.kind == "best" else {}
        grid = self.phase.method.grid
        combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] if grid else [{}]
        keys = [self.state.add_member(self.phase.name, {**combo, **best, "seed": seed}, self.phase.role)
                for combo in combos for seed in seeds]
        for i in range(0, len(keys), self.k):
            self.record["bundles"][f"b{i // self.k:03d}"] = keys[i:i + self.k]
        self.state.save()

    def _ask(self) -> str | None:
        """A new bundle of up to K Optuna suggestions, or None when the phase has all its samples."""
        have = len(self.state.members(self.phase.name))
        want = min(self.k, self.phase.method.samples - have)
        if want <= 0:
            return None
        if self.teller is not None:
            self.teller.wait()  # the sampler sees every member that ended before this ask
        keys = []
        for _ in range(want):
            trial = self.study.ask(self.phase.method.search)
            key = self.state.add_member(self.phase.name, {**trial.params, "seed": 0}, self.phase.role, trial.number)
            self.state.member(key).optuna_id = trial._trial_id  # to set user attributes after a restart
            keys.append(key)
        bundle = f"b{len(self.record['bundles']):03d}"
        self.record["bundles"][bundle] = keys
        self.state.save()
        return bundle

    def next_bundle(self) -> str | None:
        """The next bundle to launch: an unfinished one first, then (search) a newly asked one."""
        if self.queue:
            return self.queue.pop(0)
        return self._ask() if self.study is not None else None

    def trial_config(self, bundle: str) -> dict[str, Any]:
        """The Tune trial config of a bundle: the pair, shared settings, and each member's own."""
        return {PAIR_KEY: self.spec.pair, "base": self.base_settings(), "sweep": str(self.state.folder),
                "phase": self.phase.name, "bundle": bundle, "asha": self.asha_name,
                "rank_by": [self.spec.objectives[0].metric, *self.spec.scheduler["also_rank_by"]],  # objective first
                "threads": self.spec.resources["threads"],
                "members": [{"key": k, "settings": self.state.member(k).settings,
                             "status": self.state.member(k).status.value} for k in self.record["bundles"][bundle]]}

    def done(self) -> bool:
        """Every member the phase needs exists and has ended (otsr's own records, not Tune's return)."""
        members = self.state.members(self.phase.name)
        if self.phase.kind == "search" and len(members) < self.phase.method.samples:
            return False
        return all(m.ended for m in members.values())

    def total(self) -> int:
        """Member configurations the phase trains."""
        if self.phase.kind == "search":
            return self.phase.method.samples
        return sum(len(keys) for keys in self.record["bundles"].values())

    def n_bundles(self) -> int:
        """Tune trials still to launch (an upper bound for Tune's num_samples)."""
        if self.phase.kind == "search":
            missing = self.phase.method.samples - len(self.state.members(self.phase.name))
            return len(self.queue) + max(0, math.ceil(missing / self.k))
        return len(self.queue)

    # --- Optuna ---

    def tell_later(self, key: str) -> None:
        """Tell the study about member ``key`` through the teller (now, without one)."""
        if self.teller is None:
            self.tell(key)
        else:
            self.teller.submit(key, self.tell, key)

    def tell(self, key: str) -> None:
        """Tell the study how member ``key`` ended (complete, pruned by ASHA, or failed), with its attributes."""
        m = self.state.member(key)
        if self.study is None or m.optuna is None or m.told:
            return
        trial = optuna.trial.Trial(self.study, m.optuna_id)
        attrs = {"member": key, "seed": m.settings.get("seed"), "status": m.status.value, "step": m.step,
                 "mlflow_run_id": m.run_id, "reason": m.reason}
        attrs.update({k: v for k, v in m.metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)})
        try:
            for k, v in attrs.items():
                trial.set_user_attr(k, v)
        except optuna.exceptions.UpdateFinishedTrialError:  # told before a crash, not saved
            m.told = True
            return
        if not self.spec.multi_objective:
            for step, value in sorted(m.objective.items(), key=lambda kv: int(kv[0])):
                if math.isfinite(value):
                    trial.report(value, int(step))
        values = [m.metrics.get(o.metric) for o in self.spec.objectives]
        finite = all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
        if m.status is MemberStatus.COMPLETED and finite:
            self.study.tell(m.optuna, values)
        elif m.status is MemberStatus.STOPPED:
            self.study.tell(m.optuna, state=optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(m.optuna, state=optuna.trial.TrialState.FAIL)
        m.told = True


class BundleSearcher(Searcher):
    """Ray Tune searcher that hands out the bundles of one or more phases run together (see ``PhaseRun``), in
    phase order; Tune never restores it."""

    def __init__(self, runs: list[PhaseRun], in_flight: int | None = None):
        super().__init__(metric=None, mode=None)
        self.runs = runs
        self.in_flight = in_flight  # at most this many bundles handed out and not yet ended (None: no cap)
        self.live: set[str] = set()  # Tune trial ids handed out and not yet complete

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        """Everything the search needs is in the phase run."""
        return True

    def suggest(self, trial_id: str):
        """The next bundle's config; None (ask again later) while ``in_flight`` bundles are out, so an adaptive
        sampler is not asked far ahead of its results (Tune asks for one trial per pending slot); or FINISHED."""
        if self.in_flight is not None and len(self.live) >= self.in_flight:
            return None
        for run in self.runs:
            bundle = run.next_bundle()
            if bundle is not None:
                run.trials[trial_id] = bundle
                self.live.add(trial_id)
                return run.trial_config(bundle)
        return Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        """Frees the trial's place; members are told one by one as they end (``MemberRecorder``)."""
        self.live.discard(trial_id)

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Nothing: a sweep resumes from otsr's state file, not from Tune's files."""

    def get_state(self) -> dict:
        """Nothing for Tune to keep."""
        return {}

    def __getstate__(self):  # Tune pickles its config into its own (never re-read) experiment files
        return {"_metric": None, "_mode": None, "runs": []}
