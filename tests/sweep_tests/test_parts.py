"""The sweep driver's parts on their own: the durable queue, typed MLflow operations on a real sqlite store, the
per-member ASHA rungs, the state file, the driver lock, phase planning and bundling."""

import json
import math
import os
import signal
import time

import pytest

from sweep.asha import Rungs
from sweep.folder import SweepState, SweepStateError
from sweep.lock import SweepBusy, driver_lock, is_locked
from sweep.mlflow_sink import MlflowSink, op_from_json
from sweep.phases import rung_history
from sweep.queue import DurableQueue
from sweep.records import MemberRecord
from sweep.searcher import PhaseRun, plan_groups
from sweep.space import load_space
from sweep.tracking import Tracker, get_or_create_experiment
from tests.sweep_tests.conftest import tiny_space


def test_queue_keeps_writes_on_disk_until_the_target_answers(tmp_path):
    sent, up = [], {"ok": False}

    def apply(op):
        if not up["ok"]:
            raise ConnectionError("server down")
        sent.append(op)

    q = DurableQueue(tmp_path / "q.jsonl", apply)
    q.submit({"op": "a"})
    q.submit({"op": "b"})
    assert sent == [] and len(DurableQueue(tmp_path / "q.jsonl", apply)) == 2  # on disk, in order
    assert "ConnectionError" in q.last_error
    started = time.monotonic()
    assert not q.wait_idle(60) and time.monotonic() - started < 10  # no waiting on a target that is failing
    up["ok"] = True
    assert q.flush(force=True) and sent == [{"op": "a"}, {"op": "b"}]
    assert not (tmp_path / "q.jsonl").exists()


def test_typed_operations_reach_a_real_store_and_runs_are_found_again(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = get_or_create_experiment(uri, "otsr/t", (tmp_path / "art").as_uri())
    tr = Tracker(uri, tmp_path, exp)
    tr.create_run("parent", "sweep", {"role": "sweep"})
    tr.create_run("m0", "gan λ=1 s0", {"role": "search"}, {"lam": 1.0, "log10_lam": "0.0"}, parent="parent")
    tr.log_metrics("m0", {"eval/l2_uvp": 3.0, "eval/bad": float("nan")}, step=10)
    tr.log_table("parent", {"metric": ["l2_uvp"], "gan": [3.0]}, "comparison.json")
    tr.rename("m0", "gan λ=1 s0 (stopped @10)")
    tr.set_status("m0", "KILLED")
    assert tr.pending == 0
    run = tr.sink.client.get_run(tr.run_ids()["m0"])
    assert run.info.status == "KILLED" and run.info.run_name.endswith("(stopped @10)")
    assert run.data.metrics == {"eval/l2_uvp": 3.0} and run.data.params["log10_lam"] == "0.0"
    assert run.data.tags["mlflow.parentRunId"] == tr.run_ids()["parent"]
    again = MlflowSink(uri, exp, tmp_path / "elsewhere")  # a new driver finds the run by its key tag
    (tmp_path / "elsewhere").mkdir()
    op_from_json({"op": "create_run", "key": "m0", "name": "x", "tags": {"otsr.key": f"{tmp_path.name}/m0"},
                  "params": {}}).apply(again)
    assert again.runs["m0"] == tr.run_ids()["m0"]
    with pytest.raises(ValueError, match="unknown tracking operation 'nope'"):
        op_from_json({"op": "nope"})


def test_asha_rungs_stop_the_worse_half_at_each_rung():
    rungs = Rungs(grace=10, reduction_factor=2, max_t=80, modes={"l2_uvp": "min"})
    assert sorted(rungs.rungs) == [10, 20, 40]
    assert rungs.decide("a", 10, {"l2_uvp": 1.0}) and rungs.decide("b", 10, {"l2_uvp": 2.0}) is False
    assert rungs.decide("c", 10, {"l2_uvp": 0.5})
    assert rungs.decide_many([("d", 10, {"l2_uvp": 5.0}), ("e", 10, {"l2_uvp": 0.1})]) == ["d"]
    bundle = Rungs(grace=10, reduction_factor=4, max_t=80, modes={"l2_uvp": "min"})  # 8 members, an empty rung
    values = [3.0, 8.0, 1.0, 7.0, 6.0, 2.0, 5.0, 4.0]
    assert sorted(bundle.decide_many([(f"m{i}", 10, {"l2_uvp": v}) for i, v in enumerate(values)])) == \
        ["m0", "m1", "m3", "m4", "m6", "m7"]  # its best quarter goes on (m2, m5), the first member too only if good
    replay = Rungs(grace=10, reduction_factor=2, max_t=80, modes={"l2_uvp": "min"})
    replay.seed({"a": {10: {"l2_uvp": 1.0}}, "b": {10: {"l2_uvp": 2.0}}})
    assert replay.rungs[10] == {"a": {"l2_uvp": -1.0}, "b": {"l2_uvp": -2.0}}


def test_asha_also_ranking_by_bias_keeps_the_least_biased_members():
    """Halving by L2-UVP alone stops the small-lambda members that match Q best; ranked by the bias too, they go on."""
    uvp = [16.3, 16.8, 17.8, 20.2, 24.3, 25.2, 43.7, 81.3]
    bias = [3.1, 2.4, 2.7, 5.2, 2.2, 2.18, 7.2, 12.7]
    items = [(f"m{i}", 100, {"l2_uvp": u, "bias_sliced_w2": b}) for i, (u, b) in enumerate(zip(uvp, bias))]
    by_uvp = Rungs(grace=100, reduction_factor=4, max_t=400, modes={"l2_uvp": "min"})
    assert sorted(set(k for k, *_ in items) - set(by_uvp.decide_many(items))) == ["m0", "m1"]
    both = Rungs(grace=100, reduction_factor=4, max_t=400, modes={"l2_uvp": "min", "bias_sliced_w2": "min"})
    assert sorted(set(k for k, *_ in items) - set(both.decide_many(items))) == ["m0", "m1", "m4", "m5"]
    records = {k: MemberRecord("gan", {}, "search", objective={"100": v["l2_uvp"]},
                               ranks={"100": {"bias_sliced_w2": v["bias_sliced_w2"]}}) for k, _, v in items}
    replay = Rungs(grace=100, reduction_factor=4, max_t=400, modes={"l2_uvp": "min", "bias_sliced_w2": "min"})
    replay.seed(rung_history("l2_uvp", records))  # what a resumed driver's rung actor starts from
    assert replay.rungs == both.rungs
    live = Rungs(grace=150, reduction_factor=2, max_t=1000, modes={"l2_uvp": "min"})  # milestones between evaluations
    curves = {"a": {100: 3.0, 200: 2.0, 300: 1.5, 400: 1.2}, "b": {100: 4.0, 200: 3.5}}
    for step in (100, 200, 300, 400):
        live.decide_many([(k, step, {"l2_uvp": c[step]}) for k, c in curves.items() if step in c])
    replayed = Rungs(grace=150, reduction_factor=2, max_t=1000, modes={"l2_uvp": "min"})
    replayed.seed({k: {s: {"l2_uvp": v} for s, v in c.items()} for k, c in curves.items()})
    assert replayed.rungs == live.rungs and live.rungs[150] and live.rungs[300]
    nan = Rungs(grace=100, reduction_factor=4, max_t=400, modes={"l2_uvp": "min"})  # diverged members report NaN
    assert nan.decide_many([(f"d{i}", 100, {"l2_uvp": math.nan}) for i in range(3)] +
                           [("ok", 100, {"l2_uvp": 5.0})]) == ["d0", "d1", "d2"]  # the finite one goes on


def test_state_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a sweep folder"):
        SweepState.load(tmp_path)
    (tmp_path / "state.json").write_text("{broken")
    with pytest.raises(SweepStateError, match="damaged state file"):
        SweepState.load(tmp_path)
    state = SweepState.create(tmp_path, tracking_uri="x", experiment_id="1", overrides={})
    key = state.add_member("gan", {"lam": 1.0, "seed": 0}, "search", optuna=0)
    state.save()
    assert key == "gan-000" and SweepState.load(tmp_path).member(key)["status"] == "pending"


def test_driver_lock_is_exclusive_and_released(tmp_path):
    with driver_lock(tmp_path):
        assert is_locked(tmp_path)
        with pytest.raises(SweepBusy, match="driver.lock"):
            with driver_lock(tmp_path):
                pass
    assert not is_locked(tmp_path)


def test_fixed_phases_are_bundled_and_searches_come_first(tmp_path):
    space = tiny_space(tmp_path, samples=3, seeds=3)
    space.write_text(space.read_text().replace("  ots:\n", "  ots:\n    bundle: 2\n"))
    spec = load_space(space)
    groups = plan_groups(spec)
    assert [[p.name for p in g] for g in groups] == [["gan", "ots"], ["gan-best"]]
    # 3 samples in bundles of tiny_space's size: the baseline waits for the rerun only when the search fills the slots
    search_trials = -(-3 // spec.methods[0].bundle)
    assert [[p.name for p in g] for g in plan_groups(spec, slots=search_trials + 1)] == [["gan", "ots"], ["gan-best"]]
    assert [[p.name for p in g] for g in plan_groups(spec, slots=search_trials)] == [["gan"], ["gan-best", "ots"]]
    state = SweepState.create(tmp_path, tracking_uri="x", experiment_id="1", overrides={})
    ots = PhaseRun(spec, groups[0][1], state)
    assert list(ots.record["bundles"].values()) == [["ots-000", "ots-001"], ["ots-002"]]
    config = ots.trial_config(ots.next_bundle())
    assert [m["settings"]["seed"] for m in config["members"]] == [0, 1]
    assert config["base"]["checkpoint_every"] == config["base"]["eval_every"]
    json.dumps(config)  # what Tune carries must be plain data


def test_member_records_and_reports_round_trip_and_old_state_files_load(tmp_path):
    import json

    from sweep.records import MemberRecord, MemberReport, MemberStatus

    report = MemberReport(MemberStatus.STOPPED, 40, {"l2_uvp": 3.0}, [{"step": 40, "loss_map": 1.0}],
                          [{"step": 40, "l2_uvp": 3.0}], "stopped early at step 40")
    assert MemberReport.from_json(json.loads(json.dumps(report.to_json()))) == report
    rec = MemberRecord("gan", {"lam": 1.0, "seed": 0}, "search", 0, MemberStatus.COMPLETED, 40, {"l2_uvp": 3.0})
    assert MemberRecord.from_json(json.loads(json.dumps(rec.to_json()))) == rec
    assert rec.ended and rec["status"] == "completed" and MemberStatus.STOPPED.outcome == "stopped_early"
    # a state file written before the typed records: plain dicts, without the later optional fields
    old = {"phase": "gan", "settings": {"lam": 1.0, "seed": 0}, "role": "search", "optuna": 0, "status": "stopped",
           "step": 20, "metrics": {"l2_uvp": 5.0}, "objective": {"20": 5.0}, "logged_eval": 20, "logged_train": 20,
           "reason": "stopped early at step 20", "optuna_id": 1}
    (tmp_path / "state.json").write_text(json.dumps({"tracking_uri": "x", "experiment_id": "1", "phases": {},
                                                     "best": {}, "overrides": {}, "members": {"gan-000": old}}))
    state = SweepState.load(tmp_path)
    m = state.member("gan-000")
    assert m.status is MemberStatus.STOPPED and m.ended and m.run_id == "" and not m.uploaded
    state.save()
    again = json.loads((tmp_path / "state.json").read_text())["members"]["gan-000"]
    assert {k: again[k] for k in old} == old


def test_the_drainer_thread_owns_every_send_and_submit_never_waits(tmp_path):
    import threading
    import time

    senders, gate = [], threading.Event()

    def apply(op):
        gate.wait(5)  # a slow tracking server
        senders.append((op["op"], threading.current_thread().name))

    q = DurableQueue(tmp_path / "q.jsonl", apply)
    q.start()
    t0 = time.perf_counter()
    for i in range(3):
        q.submit({"op": f"w{i}"})
    assert time.perf_counter() - t0 < 0.5  # the caller (Tune's event loop) only appends
    assert len(DurableQueue(tmp_path / "q.jsonl", apply)) == 3  # on disk before anything was sent
    gate.set()
    assert q.wait_idle(5) and [op for op, _ in senders] == ["w0", "w1", "w2"]
    assert {name for _, name in senders} == {"otsr-tracking-drainer"}
    assert q.drain(attempts=1) and not q.running and not (tmp_path / "q.jsonl").exists()
    q.submit({"op": "after"})  # without the drainer: sent at once, as before
    assert senders[-1] == ("after", threading.current_thread().name)


def test_console_filters_only_the_named_warnings():
    import warnings

    import optuna

    from sweep.console import quiet_warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_warnings()
        optuna.samplers.QMCSampler(seed=0)
        warnings.warn("an unrelated warning", optuna.exceptions.ExperimentalWarning)
        warnings.warn("another one", UserWarning)
    assert [str(w.message) for w in seen] == ["an unrelated warning", "another one"]


def test_console_drops_only_rays_default_token_notice():
    import logging

    from sweep.console import RAY_TOKEN_DEFAULT, RAY_TOKEN_LOGGER, _DropMessage, quiet_ray_token_notice

    quiet_ray_token_notice()
    quiet_ray_token_notice()  # idempotent: one filter
    logger = logging.getLogger(RAY_TOKEN_LOGGER)
    seen = []
    handler = logging.Handler()
    handler.emit = seen.append  # on the logger itself: Ray's loggers do not propagate to the root
    logger.addHandler(handler)
    try:
        logger.warning("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.")
        logger.warning("Token authentication is disabled for this Ray cluster. Anyone with network access ...")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage()[:40] for r in seen] == ["Token authentication is disabled for thi"]
    assert sum(isinstance(f, _DropMessage) and f.prefix == RAY_TOKEN_DEFAULT for f in logger.filters) == 1


def test_an_unexpected_fault_leaves_the_sweep_failed_not_running(workdir, monkeypatch):
    """Ray's start failing (a stand-in: the real fault, a GCS that aborts, takes a minute to stage) must not leave
    the sweep 'running' in its state file and in MLflow."""
    from mlflow.tracking import MlflowClient

    from sweep import ray_session
    from sweep.phases import Options
    from sweep.runner import create_sweep, run_sweep

    folder = create_sweep(tiny_space(workdir, samples=1, seeds=1, steps=20), Options(workdir=str(workdir)))

    def gcs_died(*a, **k):
        raise RuntimeError("Timed out waiting for file /tmp/ray/session_x/gcs_server_port")

    monkeypatch.setattr(ray_session, "start", gcs_died)
    with pytest.raises(RuntimeError, match="gcs_server_port"):
        run_sweep(folder, Options(workdir=str(workdir), verbose=0))
    state = json.loads((folder / "state.json").read_text())
    assert state["status"] == "failed"
    parent_id = json.loads((folder / "tracking_runs.json").read_text())["parent"]
    parent = MlflowClient(state["tracking_uri"]).get_run(parent_id)
    assert parent.info.status == "FAILED" and "gcs_server_port" in parent.data.tags["otsr.status"]


def test_create_sweep_makes_the_sweep_while_alongside_runs_and_cleans_up_if_it_fails(workdir):
    """``otsr-sweep run`` starts Ray ``alongside`` the sweep's making: the making must run meanwhile (this
    alongside waits for the state file the making writes last), and a failing alongside leaves no folder."""
    import threading

    from sweep.phases import Options
    from sweep.runner import create_sweep

    seen = {}

    def wait_for_the_state():
        seen["thread"] = threading.current_thread() is threading.main_thread()
        seen["not_yet"] = not list((workdir / "sweeps").glob("*/state.json"))  # made meanwhile, not before
        deadline = time.monotonic() + 60
        while not list((workdir / "sweeps").glob("*/state.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        seen["made"] = bool(list((workdir / "sweeps").glob("*/state.json")))

    space = tiny_space(workdir, samples=1, seeds=1, steps=20)
    folder = create_sweep(space, Options(workdir=str(workdir), storage=str(workdir / "sweeps")),
                          alongside=wait_for_the_state)
    assert seen == {"thread": True, "not_yet": True, "made": True}
    assert SweepState.load(folder)["status"] == "created"

    def ray_failed():
        deadline = time.monotonic() + 60
        while not list((workdir / "sweeps2").glob("*/state.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        raise RuntimeError("no Ray today")

    with pytest.raises(RuntimeError, match="no Ray today"):
        create_sweep(space, Options(workdir=str(workdir), storage=str(workdir / "sweeps2")), alongside=ray_failed)
    assert list((workdir / "sweeps2").iterdir()) == []


def test_beside_returns_the_workers_result_and_raises_its_error_on_the_calling_thread():
    """The report is drawn beside Ray's shutdown: its failure must reach the driver, not die with the thread."""
    from sweep.runner import _beside

    ran = []
    assert _beside(lambda: 42, lambda: ran.append("here")) == 42 and ran == ["here"]

    def broken_report():
        raise ValueError("report.png: disk full")

    with pytest.raises(ValueError, match="disk full"):
        _beside(broken_report, lambda: ran.append("stopped Ray"))
    assert ran == ["here", "stopped Ray"]

    def second_ctrl_c():
        raise KeyboardInterrupt("second SIGINT")

    with pytest.raises(KeyboardInterrupt) as caught:  # a signal on this thread: the work is undone, and a
        _beside(broken_report, second_ctrl_c, undo=ran.append)  # failure on both sides is not lost
    assert "disk full" in "".join(caught.value.__notes__)
    with pytest.raises(KeyboardInterrupt):
        _beside(lambda: "made", second_ctrl_c, undo=ran.append)
    assert ran[-1] == "made"


def test_run_goes_on_when_ray_does_not_start_beside_the_making_and_leaves_no_half_started_node(monkeypatch, capsys):
    """``otsr-sweep run`` starts Ray beside the sweep's making; a failure there is left to ``run_sweep``'s own
    start (which marks the sweep failed), after stopping whatever half started."""
    from sweep import cli, ray_session
    from sweep.phases import Options

    calls = []

    def gcs_died(*a, **k):
        raise RuntimeError("Timed out waiting for file /tmp/ray/session_x/gcs_server_port")

    monkeypatch.setattr(ray_session, "start", gcs_died)
    monkeypatch.setattr(ray_session, "stop", lambda: calls.append("stop"))
    cli._start_ray(Options())
    assert calls == ["stop"] and "Ray did not start (RuntimeError); trying again" in capsys.readouterr().err


def test_tune_pending_trials_default_is_set_for_one_run_and_never_overrides_the_user(monkeypatch):
    from sweep.phases import PENDING_ENV, _EnvDefault

    monkeypatch.delenv(PENDING_ENV, raising=False)
    env = _EnvDefault()
    env.setdefault(PENDING_ENV, "2")
    assert os.environ[PENDING_ENV] == "2"
    env.restore()
    assert PENDING_ENV not in os.environ
    monkeypatch.setenv(PENDING_ENV, "7")  # the user's choice stays, and stays after the run
    env.setdefault(PENDING_ENV, "2")
    env.restore()
    assert os.environ[PENDING_ENV] == "7"


def test_trial_slots_count_every_resource_and_fractional_shares():
    from sweep.phases import slots_for

    res = {"cpu": 1, "gpu": 0, "custom": {}, "max_concurrent": 0}
    assert slots_for({"CPU": 2.0}, res) == 2
    assert slots_for({"CPU": 2.0}, {**res, "cpu": 0.2}) == 10  # 2 // 0.2 is 9.0 in floats
    assert slots_for({"CPU": 8.0, "GPU": 1.0}, {**res, "gpu": 0.25}) == 4
    assert slots_for({"CPU": 8.0, "tpu_host": 2.0}, {**res, "custom": {"tpu_host": 1}}) == 2
    assert slots_for({"CPU": 8.0}, {**res, "max_concurrent": 3}) == 3
    assert slots_for({}, res) == 1  # an autoscaling head that offers nothing yet


def test_bundle_searcher_keeps_at_most_in_flight_bundles_out():
    from ray.tune.search import Searcher

    from sweep.searcher import BundleSearcher

    class Listed:  # the three methods BundleSearcher uses of a PhaseRun, over a fixed list of bundles
        def __init__(self, bundles):
            self.bundles, self.trials = list(bundles), {}

        def next_bundle(self):
            return self.bundles.pop(0) if self.bundles else None

        def trial_config(self, bundle):
            return {"bundle": bundle}

    searcher = BundleSearcher([Listed(["b0", "b1", "b2"])], in_flight=2)
    assert searcher.suggest("t0") == {"bundle": "b0"} and searcher.suggest("t1") == {"bundle": "b1"}
    assert searcher.suggest("t2") is None  # two out: ask again later, Optuna is not asked ahead
    searcher.on_trial_complete("t0")
    assert searcher.suggest("t2") == {"bundle": "b2"}
    searcher.on_trial_complete("t1"), searcher.on_trial_complete("t2")
    assert searcher.suggest("t3") == Searcher.FINISHED


def test_members_are_told_off_the_callers_thread_and_the_next_ask_waits_for_them(tmp_path, capsys):
    import threading

    import optuna

    from sweep.records import MemberStatus
    from sweep.studies import StudyTeller

    spec = load_space(tiny_space(tmp_path, samples=4, seeds=1))
    state = SweepState.create(tmp_path, tracking_uri="x", experiment_id="1", overrides={})
    teller = StudyTeller()
    gan = PhaseRun(spec, plan_groups(spec)[0][0], state, teller=teller)
    keys = gan.record["bundles"][gan.next_bundle()]
    m = state.member(keys[0])
    m.status, m.step, m.metrics, m.objective = MemberStatus.COMPLETED, 20, {"l2_uvp": 3.0}, {"10": 4.0, "20": 3.0}
    gate = threading.Event()
    teller.submit("a slow write", gate.wait)  # the study's writer is busy: telling must not wait for it
    gan.tell_later(keys[0])
    trial = gan.study._storage.get_trial(m.optuna_id)
    assert trial.state is optuna.trial.TrialState.RUNNING and not m.told
    teller.submit("a broken write", lambda: 1 / 0)  # printed, and the writes after it still run
    asking = threading.Thread(target=gan.next_bundle)
    asking.start()
    asking.join(0.5)
    assert asking.is_alive()  # the next ask waits until the sampler can see the members told before it
    gate.set()
    asking.join(10)
    assert not asking.is_alive()
    trial = gan.study._storage.get_trial(m.optuna_id)
    assert trial.state is optuna.trial.TrialState.COMPLETE and trial.values == [3.0] and m.told
    assert trial.intermediate_values == {10: 4.0, 20: 3.0} and trial.user_attrs["member"] == keys[0]
    assert "could not record a broken write in the Optuna study: ZeroDivisionError" in capsys.readouterr().err
    m.told = False  # told, but the state file was not saved before a crash: telling again is a no-op
    gan.tell(keys[0])
    assert m.told
    teller.close()
    with pytest.raises(RuntimeError, match="closed"):
        teller.submit("late", print)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_the_driver_like_ctrl_c(sig):
    """The driver's handler, given real signals in this process: the first one asks for a graceful stop and sets the
    exit code (128 + the signal) and the name the driver prints, a second one stops at once. Real drivers:
    SIGINT in test_bundled_sweeps, SIGUSR1 (which Tune takes over while a phase runs) and SIGTERM (which ray.init
    takes over) in test_signals."""
    from sweep import interrupts

    saved = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    try:
        interrupts.install()
        assert signal.getsignal(sig) is interrupts._handler  # (else the signal below would end this worker)
        os.kill(os.getpid(), sig)
        deadline = time.time() + 5
        while not interrupts.STOP.is_set() and time.time() < deadline:
            time.sleep(0.01)
        assert interrupts.STOP.is_set()
        assert interrupts.exit_code() == 128 + sig and interrupts.signal_name() == sig.name
        with pytest.raises(KeyboardInterrupt, match=f"second {sig.name}"):
            os.kill(os.getpid(), sig)
            time.sleep(5)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        interrupts._received.clear()  # what install() clears: no signal name leaks into later tests
        interrupts.STOP.clear()
