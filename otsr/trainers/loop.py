"""The training loop of every method and bundle size: setup, sync points (losses, divergence, evaluation,
checkpoints), resume and outputs. The adversarial updates themselves are the method's (``otsr.methods``).

A bundle trains K configurations that share shapes and the loop; ``train`` is a bundle of one. Each member has
its own status: a member whose loss goes non-finite is frozen and reported ``diverged at step N`` while the
others go on; a member that a report callback stops (early stopping) is frozen with its last evaluation. At the
next readout the bundle drops its ended members (rebuilt from the survivors' checkpoints), so they stop costing
compute: a successive-halving search in a bundle saves wall time, not only member-steps.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from otsr.checkpoint import CheckpointError, load_checkpoint
from otsr.config import TrainConfig
from otsr.evaluation import MapChange, check_pair, evaluate_members
from otsr.models import MemberView, member_state
from otsr.pairs import Pair
from otsr.result import Progress, Result
from otsr.rundir import RunFolder
from otsr.runtime import resolve_device
from otsr.selection import MemberSelection, member_snapshot, restore_member
from otsr.state import TrainState, build_networks, build_state

Report = Callable[[list[Progress]], "Sequence[int] | None"]  # returns the member indices to stop early


def train(cfg: TrainConfig, pair: Pair, *, report: Callable[[Progress], Any] | None = None,
          resume: dict[str, Any] | Path | str | None = None, out_dir: Path | str | None = None,
          on_log: Callable[[int, dict[str, float]], None] | None = None) -> Result:
    """Train one map with ``cfg.method`` on ``pair`` (a bundle of one; see ``train_bundle``).

    Example:
        >>> from otsr import TrainConfig, make_pair, train
        >>> res = train(TrainConfig(steps=20, eval_every=10, final_eval_samples=256, device="cpu"),
        ...             make_pair("gaussian-shift", dim=4))
        >>> res.status
        'completed'
    """
    solo_report = (lambda ps: report(ps[0]) and None) if report is not None else None
    solo_log = (lambda step, rows: on_log(step, rows[0]) if rows[0] else None) if on_log is not None else None
    return train_bundle([cfg], pair, report=solo_report, resume=[resume] if resume is not None else None,
                        out_dirs=[out_dir] if out_dir is not None else None, on_log=solo_log)[0]


def train_bundle(members: list[TrainConfig], pair: Pair, *, report: Report | None = None,
                 resume: list[dict[str, Any] | Path | str] | None = None,
                 out_dirs: list[Path | str] | None = None,
                 on_log: Callable[[int, list[dict[str, float] | None]], None] | None = None,
                 on_step: Callable[[int], None] | None = None) -> list[Result]:
    """Train K configurations of one method on ``pair`` together; returns one Result per member, in order.

    ``report`` gets the members' Progress at each evaluation (and once more, ``final``, at the end) and may return
    indices of members to stop; ``on_log(step, rows)`` gets each active member's mean losses at every readout
    (None for frozen members); ``on_step(step)`` is called after every step, without a host sync (a progress
    bar's tick). Host syncs happen only every ``log_every`` steps and at evaluations.
    """
    check_pair(pair, resolve_device(members[0].device), members[0].cost)  # the final evaluation's code path, first
    state = build_state(members, pair)
    k = state.k
    folders = [RunFolder(d) for d in out_dirs] if out_dirs is not None else None
    if folders is not None and len(folders) != k:
        raise ValueError(f"{len(folders)} output folder(s) for a bundle of {k}")
    loop = _Loop(state, report, on_log, folders, on_step)
    if resume is not None:
        loop.restore([c if isinstance(c, dict) else load_checkpoint(c, map_location=state.device) for c in resume])
    return loop.run()


class _Loop:
    """One training run of a bundle: the state plus each member's status and outputs.

    Members keep their bundle index ``i`` throughout; ``self.row[i]`` is their row in the current state (None once
    dropped). When members end (stopped early or diverged) the state is rebuilt from the survivors' checkpoints
    (``_drop_ended``), so an ended member stops costing its share of every step.
    """

    def __init__(self, state: TrainState, report, on_log, folders: list[RunFolder] | None, on_step=None):
        self.s, self.report, self.on_log, self.folders, self.on_step = state, report, on_log, folders, on_step
        k = state.k
        self.members = list(state.members)
        self.row: list[int | None] = list(range(k))
        self.status = ["running"] * k
        self.message = [""] * k
        self.metrics: list[dict[str, float]] = [{} for _ in range(k)]
        self.results: list[Result | None] = [None] * k
        self.change = MapChange(state.pair, state.device)
        self.selection = [MemberSelection() for _ in range(k)] if state.cfg.keep_best else None
        self.signal: str | None = None  # the bias the selection follows, fixed at the first evaluation
        self.ended_at: dict[int, int] = {}  # members that had ended before a resume: the step they ended at
        self.saved_ended: set[int] = set()  # members that ended early and wrote their last checkpoint
        self.t0 = time.perf_counter()

    @property
    def k(self) -> int:
        """Members of the bundle as started (ended ones included)."""
        return len(self.members)

    def _rows(self) -> list[tuple[int, int]]:
        """(member, row in the state) of the members the state still holds."""
        return [(i, r) for i, r in enumerate(self.row) if r is not None]

    # --- resume ---

    def restore(self, ckpts: list[dict[str, Any]]) -> None:
        """Load the members' checkpoints; members that had ended stay ended (and leave the state)."""
        s = self.s
        for i, (c, m) in enumerate(zip(ckpts, self.members)):
            if c["config"].get("method") != m.method:
                raise CheckpointError(f"checkpoint of member {i} is a {c['config'].get('method')!r} run, not "
                                      f"{m.method!r}")
        try:
            s.load_members(ckpts)
        except ValueError as e:
            raise CheckpointError(f"cannot resume: {e}") from None
        if s.step > s.cfg.steps:
            raise ValueError(f"cannot resume: the checkpoint is at step {s.step}, beyond steps={s.cfg.steps}; "
                             f"pass at least --steps {s.step}")
        for i, c in enumerate(ckpts):
            self.status[i] = c.get("status", "running")
            self.message[i] = c.get("message", "")
            self.metrics[i] = dict(c.get("metrics", {}))
            if self.status[i] == "completed" and s.step < s.cfg.steps:
                self.status[i] = "running"  # a longer run continues a completed one
            if self.status[i] != "running":
                s.active[i] = False
                self.ended_at[i] = int(c["step"])
        if self.folders is not None:
            for i, f in enumerate(self.folders):
                f.start(self.members[i], s.pair, keep_result=self.status[i] != "running")
        if s.step < s.cfg.steps:
            for i in range(self.k):
                if self.status[i] != "running":
                    self._finish(i)
            self.saved_ended.update(i for i in range(self.k) if self.status[i] != "running")  # already on disk
            self._drop_ended()

    # --- the loop ---

    def run(self) -> list[Result]:
        s, cfg = self.s, self.s.cfg
        if self.folders is not None and s.step == 0:
            for f, m in zip(self.folders, self.members):
                f.start(m, s.pair)
        if s.step == 0:  # the start (identity, Bures or bicubic map): the first point of every curve
            self._evaluate(cfg.eval_samples, full=False)
        n_losses = len(s.method.losses)
        acc = torch.zeros(s.k, n_losses, device=s.device)
        first_bad = torch.full((s.k, n_losses), math.inf, device=s.device)
        n_acc = 0
        while s.step < cfg.steps and self._any_active():
            s.set_lr(cfg.lr_factor(s.step))
            losses = s.method.step(s).detach().float()
            s.step += 1
            if s.average is not None:
                s.average.update(s.active)
            if self.on_step is not None:
                self.on_step(s.step)
            acc += losses
            n_acc += 1
            first_bad = torch.where(torch.isfinite(losses) | torch.isfinite(first_bad), first_bad,
                                    torch.full_like(first_bad, s.step))
            step = s.step
            is_eval = step % cfg.eval_every == 0 and step < cfg.steps
            is_ckpt = self.folders is not None and step % cfg.checkpoint_every == 0 and step < cfg.steps
            if not (step % cfg.log_every == 0 or is_eval or is_ckpt or step == cfg.steps):
                continue
            self._check_divergence(first_bad.tolist())  # host sync
            mean = (acc / n_acc).tolist()
            rows: list[dict[str, float] | None] = [None] * self.k
            for i, r in self._rows():
                if self.status[i] == "running":
                    rows[i] = {"step": step, **{f"loss_{name}": v for name, v in zip(s.method.losses, mean[r])}}
                    s.history[r].append(rows[i])
            acc.zero_()
            n_acc = 0
            if self.on_log is not None:
                self.on_log(step, rows)
            if is_eval:  # evaluate, then checkpoint (the evaluation survives a resume), then report
                self._evaluate(cfg.eval_samples, full=False)
            if is_ckpt:
                self._save_all()
            if is_eval:
                self._report(final=False)
            if step < cfg.steps and self._drop_ended():
                s = self.s
                acc = torch.zeros(s.k, n_losses, device=s.device)
                first_bad = torch.full((s.k, n_losses), math.inf, device=s.device)
        self._save_ended()  # members that ended with no readout after (every member, or at the last step)
        running = [i for i in range(self.k) if self.status[i] == "running"]
        if running and s.average is not None:
            s.average.commit()  # the result is the average (its selection and final evaluation too)
        if running:
            kept = self._select(running)
            finished = s.method.finish(s)
            final = self._evaluate(cfg.final_eval_samples, full=True, members=running)
            for i in running:
                note = "".join(f"; {n}" for n in (kept.get(i), finished) if n)
                final[i]["selected_step"] = float(self.selection[i].step if i in kept else s.step) \
                    if self.selection is not None else float(s.step)
                self.status[i], self.message[i], self.metrics[i] = "completed", f"completed {s.step} steps{note}", \
                    final[i]
            if self.folders is not None:
                self._save_all()
        for i in range(self.k):
            if self.results[i] is None:
                self._finish(i)  # run folders complete before the final report
        if running:
            self._report(final=True, members=running)
        return list(self.results)

    def _drop_ended(self) -> bool:
        """Rebuild the state from the running members' checkpoints (the exact-resume path) when some member it holds
        has ended; each ended member's checkpoint is written first, as its last. Returns whether it rebuilt."""
        s = self.s
        keep = [i for i, _ in self._rows() if self.status[i] == "running"]
        if len(keep) == s.k:
            return False
        self._save_ended()
        if not keep:
            return False
        rows = [self.row[i] for i in keep]
        smaller = build_state([self.members[i] for i in keep], s.pair, fit=s.fit)
        smaller.load_members([s.member_checkpoint(r) for r in rows])
        self.change.keep(rows)
        self.s = smaller
        self.row = [keep.index(i) if i in keep else None for i in range(self.k)]
        return True

    def _save_ended(self) -> None:
        """Write the checkpoint of each member of the state that ended early and has not written it yet (its last)."""
        if self.folders is None:
            return
        for i, r in self._rows():
            if self.status[i] in ("stopped", "diverged") and i not in self.saved_ended:
                self.folders[i].save_checkpoint(self.s.member_checkpoint(r, self.status[i]) | self._extra(i))
                self.saved_ended.add(i)

    def _select(self, running: list[int]) -> dict[int, str]:
        """The T*-free selection (``otsr.selection``): evaluate the end state at the periodic size (not recorded: the
        final evaluation is the end's point) and put back each member's kept state where the end state's bias
        regressed; returns {member: why} for those members."""
        s = self.s
        if self.selection is None or self.signal is None:
            return {}
        s.map.eval()
        try:  # (called after the average, if any, was committed: the map holds it)
            end = evaluate_members(self._maps, s.pair, n=s.cfg.eval_samples, cost=s.cfg.cost,
                                   members=[self.row[i] for i in running], device=s.device, full=False,
                                   validate=False)
        finally:
            s.map.train()
        self._observe(running, end)
        kept = {}
        for i, m in zip(running, end):
            sel, value = self.selection[i], m.get(self.signal, math.nan)
            if sel.snapshot is not None and not sel.acceptable(value) and sel.step < s.step:
                restore_member(s.map, s.k, self.row[i], sel.snapshot)
                kept[i] = sel.reason(s.step, value, self.signal)
        return kept

    def _observe(self, members: list[int], out: list[dict[str, float]]) -> None:
        """Feed a periodic evaluation to the selection (the bias's noise is measured once, at the first)."""
        s = self.s
        if self.selection is None:
            return
        if self.signal is None:
            bias = s.pair.headline().bias
            self.signal = bias if math.isfinite(out[0].get(bias, math.nan)) else None
            if self.signal is None:
                self.selection = None
                return
            from otsr.baselines import noise_spread

            noise = noise_spread(s.pair, s.cfg.cost, s.cfg.eval_samples, device=s.device).get(self.signal, 0.0)
            for sel in self.selection:
                sel.noise = noise
        for i, m in zip(members, out):
            self.selection[i].observe(s.step, m.get(self.signal, math.nan),
                                      lambda r=self.row[i]: member_snapshot(s.map, s.k, r))

    def _any_active(self) -> bool:
        return any(st == "running" for st in self.status)

    def _check_divergence(self, bad: list[list[float]]) -> None:
        """Freeze members whose losses went non-finite, naming the step and the loss (``bad``: per state row)."""
        names = self.s.method.losses
        for i, r in self._rows():
            row = bad[r]
            if self.status[i] != "running" or not any(math.isfinite(b) for b in row):
                continue
            which = min(range(len(row)), key=lambda j: row[j])
            self.status[i] = "diverged"
            self.message[i] = f"diverged at step {int(row[which])} in the {names[which]} loss (non-finite value)"
            self.metrics[i] = {}
            self.s.active[r] = False
            self._finish(i)

    def _averaged(self):
        """The map as evaluations see it: its weight average when one is kept (``map_ema``), else itself."""
        return self.s.average.applied() if self.s.average is not None else contextlib.nullcontext()

    def _maps(self, x: torch.Tensor) -> torch.Tensor:
        return self.s.map(x[None].expand(self.s.k, *x.shape))

    def _evaluate(self, n: int, full: bool, members: list[int] | None = None) -> dict[int, dict[str, float]]:
        """Evaluate the running members (or ``members``) and record the metrics in their histories."""
        s = self.s
        members = members if members is not None else [i for i, _ in self._rows() if self.status[i] == "running"]
        if not members:
            return {}
        with self._averaged():
            s.map.eval()
            try:
                out = evaluate_members(self._maps, s.pair, n=n, cost=s.cfg.cost, members=[self.row[i] for i in members],
                                       device=s.device, full=full)
                change = None if full else self.change.measure(self._maps)
            finally:
                s.map.train()
            if not full:
                self._observe(members, out)  # (a kept state is the average's)
        result = {}
        for i, m in zip(members, out):
            if change is not None:
                m["map_change"] = change[self.row[i]]
            s.evals[self.row[i]].append({"step": s.step, **m})
            result[i] = m
            if not full:
                self.metrics[i] = m
        return result

    def _progress(self, i: int, final: bool) -> Progress:
        s, r = self.s, self.row[i]
        losses = {key: v for key, v in (s.history[r][-1].items() if s.history[r] else []) if key != "step"}

        def save(folder: Path) -> Path:
            return RunFolder(folder).save_checkpoint(s.member_checkpoint(r, self.status[i]) | self._extra(i))

        return Progress(s.step, {**self.metrics[i], **losses}, final, save, MemberView(s.map, r), member=i)

    def _report(self, final: bool, members: list[int] | None = None) -> None:
        if self.report is None:
            return
        members = members if members is not None else [i for i, _ in self._rows() if self.status[i] == "running"]
        if not members:
            return
        with self._averaged():  # the callback sees the map its metrics describe
            stop = self.report([self._progress(i, final) for i in members]) or ()
        for i in stop:
            if self.status[i] == "running" and not final:
                self.status[i] = "stopped"
                self.message[i] = f"stopped early at step {self.s.step}"
                self.s.active[self.row[i]] = False
                self._finish(i)

    def _extra(self, i: int) -> dict[str, Any]:
        """What a member's checkpoint adds to its state: its message, and its result's metrics once it has one (a
        stopped member's are its last evaluation, kept across a resume)."""
        return {"message": self.message[i],
                "metrics": self.metrics[i] if self.status[i] in ("completed", "stopped") else {}}

    def _save_all(self) -> None:
        """Checkpoint every member the state holds (a dropped member's last checkpoint was written as it left)."""
        s = self.s
        for i, r in self._rows():
            self.folders[i].save_checkpoint(s.member_checkpoint(r, self.status[i]) | self._extra(i))

    def _member_net(self, i: int, which: str) -> torch.nn.Module:
        """Member i's network on its own (one-member layout), for its Result: for the map, the average when one is
        kept (a member that stopped before the end never had it committed)."""
        s, r = self.s, self.row[i]
        net = s.map if which == "map" else s.critic
        averaged = which == "map" and s.average is not None and not s.average.swapped
        if s.k == 1 and not averaged:
            return net
        solo = build_networks(self.members[i], s.pair.shape, s.pair.shape_q, s.fit, s.image_stats,
                              k=1)[0 if which == "map" else 1]
        state = member_state(net, r)
        solo.load_state_dict(state | s.average.average_state(r) if averaged else state)
        solo.dtype = net.dtype
        return solo.to(s.device)

    def _finish(self, i: int) -> None:
        s, r = self.s, self.row[i]
        res = Result(self.members[i], s.pair, self.status[i], self.message[i], self.ended_at.get(i, s.step),
                     self.metrics[i] if self.status[i] in ("completed", "stopped") else {}, s.history[r],
                     MemberView(self._member_net(i, "map")), MemberView(self._member_net(i, "critic")),
                     time.perf_counter() - self.t0, dict(s.precision), list(s.evals[r]))
        self.results[i] = res
        if self.folders is not None:
            self.folders[i].finish(res, s.device)
