"""Nightly sweeps: one Optuna study across nights, the cross-night leaderboard, regression, promotion."""

from __future__ import annotations

import io
import json

import optuna
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import checkpoint, cli, nightly, storage
from harness.config import load_sweep
from harness.leaderboard import NightBest, is_regression, trial_costs
from harness.objective import Objective
from harness.results import read_parquet
from harness.searcher import make_searcher
from harness.study import StudyStore
from models import Stage1Config, Stage1Generator, Stage2Config, Stage2Generator
from tests.conftest import ROOT, communicate_or_fail, write_sweep

SMOKE = str(ROOT / "search_spaces" / "smoke.yaml")
FID, FIDELITY = Objective("fid"), Objective("fidelity")
SMOKE_DEFAULTS = load_sweep(str(ROOT / "search_spaces" / "smoke.yaml")).defaults(1)


def _point(v: float) -> NightBest:
    return NightBest(v, v, v, 1)


def test_regression_is_relative_to_the_best_of_earlier_nights():
    # Nights without confirmation runs are points: only the margin separates them.
    assert not is_regression(_point(105.0), _point(100.0), FID, 0.10)
    assert is_regression(_point(111.0), _point(100.0), FID, 0.10)
    assert is_regression(_point(0.44), _point(0.5), FIDELITY, 0.10)
    assert not is_regression(_point(0.46), _point(0.5), FIDELITY, 0.10)
    assert not is_regression(_point(1e9), None, FID, 0.0)  # the first night has nothing to regress from


def test_no_alarm_while_tonights_interval_overlaps_the_all_time_best():
    all_time = NightBest(1190.0, 877.0, 1503.0, 3)  # the demo winner's 3 seeds (docs/RANKING.md)
    tonight = NightBest(1450.0, 1300.0, 1600.0, 3)  # 22 % worse in the mean, but inside the noise
    assert not is_regression(tonight, all_time, FID, 0.10)
    assert not is_regression(NightBest(0.40, 0.30, 0.52, 3), NightBest(0.60, 0.50, 0.70, 3), FIDELITY, 0.10)


def test_alarm_when_tonight_is_clearly_worse():
    all_time = NightBest(1190.0, 1100.0, 1280.0, 3)
    assert is_regression(NightBest(1600.0, 1450.0, 1750.0, 3), all_time, FID, 0.10)
    assert is_regression(NightBest(0.30, 0.25, 0.35, 3), NightBest(0.60, 0.50, 0.70, 3), FIDELITY, 0.10)
    # Clearly apart but closer than the margin: not an alarm.
    assert not is_regression(NightBest(1300.0, 1290.0, 1310.0, 3), NightBest(1250.0, 1240.0, 1260.0, 3), FID, 0.10)
    assert NightBest.of_row({"best_value": 5.0, "best_ci_low": 4.0, "best_ci_high": 6.0, "best_seeds": 2}) == NightBest(
        5.0, 4.0, 6.0, 2)
    assert FID.quality(200.0) == pytest.approx(0.005) and FIDELITY.quality(0.7) == 0.7
    assert FID.quality(float("nan")) is None


def test_trial_cost_sums_the_last_evaluation_of_each_stage():
    rows = [{"trial_id": "a", "stage": 1, "epoch": 1, "phase": "joint", "cpu_seconds": 100.0, "gpu_seconds": 0.0},
            {"trial_id": "a", "stage": 1, "epoch": 2, "phase": "joint", "cpu_seconds": 360.0, "gpu_seconds": 0.0},
            {"trial_id": "a", "stage": 2, "epoch": 1, "phase": "joint", "cpu_seconds": 3240.0, "gpu_seconds": 7200.0}]
    cost = trial_costs(rows)["a"]
    assert cost["cpu_hours"] == pytest.approx(1.0) and cost["gpu_hours"] == pytest.approx(2.0)


def _searcher(tmp_path, name="s"):
    store = StudyStore(str(tmp_path / "study.journal"))
    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    return store, make_searcher(space, [], Objective("fid"), seed=1, final_stage=1, study_name=name, storage=store.storage())


def test_an_early_stopped_trial_reaches_optuna_as_pruned_not_complete(tmp_path):
    store, searcher = _searcher(tmp_path)
    for tid in ("stopped", "finished", "diverged"):
        searcher.suggest(tid)
        searcher.on_trial_result(tid, {"fid": 50.0, "training_iteration": 1})
    searcher.on_trial_complete("stopped", {"fid": 50.0, "status": "running", "stage": 1, "training_iteration": 1})
    searcher.on_trial_complete("finished", {"fid": 40.0, "status": "finished", "stage": 1, "training_iteration": 2})
    searcher.on_trial_complete("diverged", {"fid": 1e6, "status": "diverged", "stage": 1, "training_iteration": 1})
    trials = store.trials("s")
    states = [t.state for t in trials]
    assert states == [optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.COMPLETE]
    assert trials[0].intermediate_values == {1: 50.0}  # TPE still sees how far it got
    assert trials[2].value == 1e6

    # A new searcher on the same journal continues the study.
    store2, searcher2 = _searcher(tmp_path)
    searcher2.suggest("next-night")
    assert len(store2.trials("s")) == 4
    # count_trials (whether the start points were evaluated already) leaves out the RUNNING one: it may be a dead
    # driver's, left by a phase that then starts afresh.
    assert store2.count_trials("s") == 3


def test_an_s3_journal_is_home_after_every_trial_and_follows_a_restored_searcher_to_a_new_pod(s3, tmp_path, monkeypatch):
    import pickle
    import tempfile

    uri = f"s3://{s3.bucket}/journal-test/study.journal"
    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "pod1") + "/")
    (tmp_path / "pod1").mkdir()
    store = StudyStore(uri)
    searcher = make_searcher(space, [], Objective("fid"), seed=1, final_stage=1, study_name="s", storage=store.storage())
    searcher.suggest("done")
    searcher.suggest("running")  # the pod dies while this one trains
    searcher.on_trial_complete("done", {"fid": 40.0, "status": "finished", "stage": 1, "training_iteration": 1})
    # No phase end, no sync call: the finished trial is already home.
    home = StudyStore(uri)
    assert [t.state for t in home.trials("s")] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING]

    # Tune restores the searcher from its pickle on a new pod: another temp dir, no local journal.
    saved = pickle.dumps(searcher)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "pod2") + "/")
    (tmp_path / "pod2").mkdir()
    restored = pickle.loads(saved)
    assert restored._ot_study._storage._backend.local_path.startswith(str(tmp_path / "pod2"))
    restored.on_trial_complete("running", {"fid": 30.0, "status": "finished", "stage": 1, "training_iteration": 1})
    trials = StudyStore(uri).trials("s")
    assert [(t.state, t.value) for t in trials] == [(optuna.trial.TrialState.COMPLETE, 40.0),
                                                    (optuna.trial.TrialState.COMPLETE, 30.0)]  # once each


def test_a_leftover_local_journal_never_passes_for_the_study_at_home(s3, tmp_path, monkeypatch):
    import tempfile

    from harness.study import MirroredJournalBackend

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path) + "/")
    uri = f"s3://{s3.bucket}/journal-test/leftover.journal"
    local = MirroredJournalBackend(uri).local_path
    with open(local, "wb") as f:  # an earlier run's journal under the same URI, home since emptied
        f.write(b'{"op_code": 0}\n')
    MirroredJournalBackend(uri)
    assert open(local, "rb").read() == b""
    storage.write_bytes(uri, b'{"op_code": 1}\n')
    MirroredJournalBackend(uri)
    assert open(local, "rb").read() == b'{"op_code": 1}\n'


def test_bad_nightly_arguments_fail_before_ray_with_the_field_named(tmp_path, capsys):
    assert nightly.main(["--storage", str(tmp_path), "--date", "27/11/2026"]) == 2
    assert "--date" in capsys.readouterr().err
    assert nightly.main(["--storage", str(tmp_path), "--regression-margin", "-1"]) == 2
    assert "--regression-margin" in capsys.readouterr().err
    assert nightly.main(["--storage", str(tmp_path), "--report-only", "--date", "2026-01-01", "--sweep", SMOKE]) == 2
    assert "no night 2026-01-01" in capsys.readouterr().err


def _is_default(row: dict) -> bool:
    return all(row[f"param.{k}"] == v for k, v in SMOKE_DEFAULTS.items())


@pytest.mark.slow
def test_two_nights_on_s3_continue_one_study_and_share_a_leaderboard(ray_local, s3, capsys):
    root = f"s3://{s3.bucket}/nightly-run"
    assert nightly.main(["--sweep", SMOKE, "--storage", root, "--date", "2026-11-25"]) == 0
    # Night 2 with a margin it cannot exceed: which night wins is up to training, not to this test.
    assert nightly.main(["--sweep", SMOKE, "--storage", root, "--date", "2026-11-26",
                         "--regression-margin", "1000"]) == 0
    out = capsys.readouterr().out
    assert "leaderboard: s3://" in out

    # The study carried over: night 2's searcher saw night 1's trials, and did not evaluate the
    # paper defaults again.
    store = StudyStore(f"{root}/nightly/optuna/smoke.journal")
    assert len(store.trials("smoke-stage1")) == 4 and len(store.trials("smoke-stage2")) == 4
    night1 = read_parquet(f"{root}/nightly/2026-11-25/smoke/results.parquet")
    night2 = read_parquet(f"{root}/nightly/2026-11-26/smoke/results.parquet")
    assert any(_is_default(r) for r in night1 if r["phase"] == "stage1" and r["source"] == "search")
    assert not any(_is_default(r) for r in night2 if r["phase"] == "stage1" and r["source"] == "search")
    # ... but every night confirms the paper defaults beside its best config, at the same budget.
    assert any(_is_default(r) for r in night2 if r["phase"] == "stage1" and r["source"] == "confirm")
    seeds = [json.loads(storage.read_bytes(f"{root}/nightly/{d}/smoke/sweep.json"))["seed"] for d in ("2026-11-25", "2026-11-26")]
    assert seeds[0] != seeds[1]

    # Both nights on the leaderboard, with cost and quality per hour in every row.
    nights = read_parquet(f"{root}/leaderboard/nights.parquet")
    assert [n["date"] for n in nights] == ["2026-11-25", "2026-11-26"]
    for n, rows in zip(nights, (night1, night2)):
        assert n["trials"] == len({r["trial_id"] for r in rows}) >= 4 + 4  # search and confirmation runs both cost
        assert n["cpu_hours"] > 0 and n["quality_per_cpu_hour"] > 0
        # Tonight's best is a confirmed config: a mean over 2 seeds with its interval.
        assert n["best_seeds"] == 2 and n["best_ci_low"] <= n["best_value"] <= n["best_ci_high"]
        assert n["gpu_hours"] == 0 and n["quality_per_gpu_hour"] is None  # a CPU machine
        assert not n["regression"]
    assert nights[1]["all_time_best"] == min(n["best_value"] for n in nights)
    trials = read_parquet(f"{root}/leaderboard/trials.parquet")
    assert sorted({t["date"] for t in trials}) == ["2026-11-25", "2026-11-26"]
    assert all(t["cpu_hours"] > 0 for t in trials)
    page = storage.read_bytes(f"{root}/leaderboard/leaderboard.html").decode()
    assert "2026-11-25" in page and "2026-11-26" in page and "data:image/png;base64," in page

    # The promoted all-time best loads: Stage-II and the Stage-I generator it refines.
    best = json.loads(storage.read_bytes(f"{root}/leaderboard/best/best.json"))
    key = load_sweep(SMOKE).objective.key  # smoke.yaml's windowed objective: fid_last2_mean
    assert best[key] == nights[1]["all_time_best"]
    state2, meta2 = checkpoint.load(f"{root}/leaderboard/best/stage2")
    state1, meta1 = checkpoint.load(f"{root}/leaderboard/best/stage1")
    Stage2Generator(Stage2Config(**meta2.architecture["stage2"])).load_state_dict(state2["generator"])
    Stage1Generator(Stage1Config(**meta1.architecture["stage1"])).load_state_dict(state1["generator"])
    # best.json holds the confirmed mean; the checkpoint is the best seed run of that config.
    assert f"/trials/{best['trial_id']}/stage2" in meta2.config["layout"]["ray_name"] and best["seeds"] == 2
    assert best["ci"][0] <= best[key] <= best["ci"][1]

    # A forced regression: an earlier night whose best tonight cannot reach. Rebuilding night 2's
    # row (no new sweep) must flag it, say so in the report and exit with the distinct code.
    fake = {**nights[0], "date": "2026-11-20", "best_value": 1e-3, "all_time_best": 1e-3, "best_ci_low": 0.9e-3,
            "best_ci_high": 1.1e-3}
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([fake, nights[0]]), buf)
    storage.write_bytes(f"{root}/leaderboard/nights.parquet", buf.getvalue())
    rc = nightly.main(["--sweep", SMOKE, "--storage", root, "--date", "2026-11-26", "--report-only"])
    captured = capsys.readouterr()
    assert rc == cli.EXIT_REGRESSION, captured.err[-2000:]
    assert "REGRESSION" in captured.err
    md = storage.read_bytes(f"{root}/leaderboard/leaderboard.md").decode()
    assert "**REGRESSION on 2026-11-26**" in md
    nights = read_parquet(f"{root}/leaderboard/nights.parquet")
    assert [n["date"] for n in nights] == ["2026-11-20", "2026-11-25", "2026-11-26"]
    assert nights[2]["regression"] and nights[2]["all_time_best"] == 1e-3


def _keys(s3, prefix: str) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=s3.endpoint)
    return [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix)
            for o in page.get("Contents", [])]


@pytest.mark.slow
def test_a_killed_night_resumes_on_a_new_pod_and_loses_no_trial(s3, tmp_path):
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    # Killed in Stage-II: the new pod restores a finished phase (Stage-I) and an unfinished one. A kill in Stage-I
    # takes the same path (run_phase is the same for both stages); test_sweep's resume test kills a sweep there.
    phase = "stage2"
    root = f"s3://{s3.bucket}/killed-night-{phase}"
    # One trial at a time, so the kill lands between the phase's first and second search trial.
    sweep = write_sweep(ROOT / "search_spaces" / "smoke.yaml", tmp_path / "smoke.yaml",
                        **{"search.max_concurrent": 1, "search.confirm": {"top_k": 1, "seeds": 0},
                           "search.scheduler": "none"})  # every trial the restored night knows ends "finished"
    cmd = [sys.executable, "harness/nightly.py", "--sweep", sweep, "--storage", root, "--date", "2026-11-27"]

    def pod() -> dict:
        """A fresh pod: its own temp dir (so no local copy of the journal) and its own Ray."""
        temp = tempfile.mkdtemp(prefix="pod-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
        return {**os.environ, "TMPDIR": temp, "RAY_TMPDIR": temp, "PYTHONUNBUFFERED": "1"}

    first_pod = pod()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=first_pod, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        # Killed once one trial of the phase has finished and Tune has saved the phase's state, so
        # the next pod restores that run (and its searcher) instead of starting it afresh.
        deadline = time.time() + 400
        ready = False
        epochs = 2 if phase == "stage1" else 1  # smoke.yaml's epochs per stage
        while time.time() < deadline and not ready and proc.poll() is None:
            keys = _keys(s3, f"killed-night-{phase}/nightly/2026-11-27/smoke/")
            done = {k.split("/trials/")[1].split("/")[0] for k in keys
                    if f"/{phase}/metrics/epoch-{epochs:04d}.json" in k}
            ready = len(done) == 1 and any(f"tune/{phase}/experiment_state" in k for k in keys)
            time.sleep(0.5)
        assert ready, f"no {phase} trial finished before the deadline"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started die together
        proc.wait()
        shutil.rmtree(first_pod["TMPDIR"], ignore_errors=True)  # the pod and its disk are gone
    store = StudyStore(f"{root}/nightly/optuna/smoke.journal")
    told_before = [t for t in store.trials(f"smoke-{phase}") if t.state.is_finished()]
    assert len(told_before) >= 1, f"the finished {phase} trial reached the journal before the kill"

    second_pod = pod()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=second_pod, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = communicate_or_fail(proc, 420, "the resumed night")
    finally:
        shutil.rmtree(second_pod["TMPDIR"], ignore_errors=True)
    out = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    assert f"resuming {phase}" in out.stdout, out.stdout[-3000:]
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # The dead driver's lease on the journal was taken over at once: it ran on this host, in a process now gone.
    assert "took over the study journal's lease from night 2026-11-27 of smoke" in out.stderr
    assert "its process is gone" in out.stderr
    from harness.phase import Phase, Source
    from harness.sweep_record import SweepRecord
    from harness.trial_ends import Ending, tune_run_ends

    night = f"{root}/nightly/2026-11-27/smoke"
    rows = read_parquet(f"{night}/results.parquet")
    record = SweepRecord.load(f"{night}/sweep.json")
    store = StudyStore(f"{root}/nightly/optuna/smoke.journal")
    for phase in (Phase.STAGE1, Phase.STAGE2):
        # Besides the 2 trials, at most the killed driver's next trial, if it trained before Tune saved it: Tune
        # never counted it ("interrupted"; on a fast machine it can even have finished its epoch), and the restored
        # night trains a replacement. The study may have heard of it (a real result), pruned if it was cut short.
        ends = tune_run_ends(record.sweep, record, rows, phase, Source.SEARCH)
        assert ends.counts.get(Ending.FINISHED) == 2 and set(ends.counts) <= {Ending.FINISHED, Ending.INTERRUPTED}, ends
        told = [t for t in store.trials(f"smoke-{phase}") if t.state == optuna.trial.TrialState.COMPLETE]
        assert 2 <= len(told) <= 2 + ends.counts.get(Ending.INTERRUPTED, 0), (
            phase, ends, [(t.number, t.state) for t in store.trials(f"smoke-{phase}")])
        assert len({tuple(sorted(t.params.items())) for t in told}) == 2, f"{phase}: a trial told twice"
        assert not [t for t in store.trials(f"smoke-{phase}") if t.state == optuna.trial.TrialState.RUNNING]


@pytest.mark.slow
def test_a_tiny_budget_ends_the_night_with_pruned_trials_and_says_so(ray_local, tmp_path, capsys):
    # Trials far longer than the budget: Tune's time budget, not the trials, ends every phase.
    sweep = write_sweep(ROOT / "search_spaces" / "smoke.yaml", tmp_path / "smoke.yaml",
                        **{"stage1.epochs": 200, "stage2.epochs": 200, "search.confirm": {"top_k": 1, "seeds": 0}})
    root = str(tmp_path / "store")
    night = ["--sweep", sweep, "--storage", root, "--date", "2026-11-28", "--budget-hours", "0.015"]  # 54 s
    assert nightly.main(night) == 0, capsys.readouterr().err
    record = json.loads(storage.read_bytes(f"{root}/nightly/2026-11-28/smoke/sweep.json"))
    assert {"stage1", "stage2"} <= set(record["budget_ended"])
    study = StudyStore(f"{root}/nightly/optuna/smoke.journal")
    for phase in ("stage1", "stage2"):
        told = [t for t in study.trials(f"smoke-{phase}") if t.state.is_finished()]
        assert told and all(t.state == optuna.trial.TrialState.PRUNED for t in told), [t.state for t in told]
        assert any(t.intermediate_values for t in told)  # TPE still sees how far they got
    night = read_parquet(f"{root}/leaderboard/nights.parquet")[-1]
    assert night["ended_by"].startswith("time budget (stage1") and "stage2" in night["ended_by"]
    assert "time budget (stage1" in storage.read_bytes(f"{root}/leaderboard/leaderboard.md").decode()


def test_a_restored_searcher_that_tells_a_finished_trial_again_keeps_one_outcome(tmp_path):
    import pickle

    store, searcher = _searcher(tmp_path)
    searcher.suggest("t")
    saved = pickle.dumps(searcher)  # Tune saved the searcher, then the trial finished, then the driver died
    searcher.on_trial_complete("t", {"fid": 40.0, "status": "finished", "stage": 1, "training_iteration": 1})
    restored = pickle.loads(saved)
    restored.on_trial_result("t", {"fid": 41.0, "training_iteration": 1})
    restored.on_trial_complete("t", {"fid": 40.0, "status": "finished", "stage": 1, "training_iteration": 1})
    restored.on_trial_complete("t", {"fid": 40.0, "status": "running", "stage": 1, "training_iteration": 1})
    assert [(t.state, t.value) for t in store.trials("s")] == [(optuna.trial.TrialState.COMPLETE, 40.0)]


def test_a_restored_searcher_lets_a_trial_it_never_suggested_run_without_telling_the_study(tmp_path, capsys):
    import pickle

    store, searcher = _searcher(tmp_path)
    searcher.suggest("first")
    saved = pickle.dumps(searcher)  # the searcher's state reached storage before the second trial's start did
    searcher.suggest("second")
    restored = pickle.loads(saved)  # a new pod: Tune restores "second" from the trial list, this from its state
    restored.on_trial_result("second", {"fid": 41.0, "training_iteration": 1})  # OptunaSearch: KeyError
    restored.on_trial_complete("second", {"fid": 40.0, "status": "finished", "stage": 1, "training_iteration": 1})
    restored.on_trial_complete("first", {"fid": 30.0, "status": "finished", "stage": 1, "training_iteration": 1})
    out = capsys.readouterr().out
    assert out.count("trial second is not in the restored searcher state") == 1, out
    told = [t for t in store.trials("s") if t.state.is_finished()]
    assert [(t.state, t.value) for t in told] == [(optuna.trial.TrialState.COMPLETE, 30.0)]


@pytest.mark.slow
def test_a_second_night_on_a_journal_in_use_is_refused_in_one_line_and_the_first_keeps_every_trial(s3, tmp_path,
                                                                                                   capsys):
    import os
    import signal
    import subprocess
    import sys
    import tempfile
    import time

    # The overlap the lease is for: a long night still running when the next one starts, on one S3 storage.
    root = f"s3://{s3.bucket}/overlapping-nights"
    journal = f"{root}/nightly/optuna/smoke.journal"
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    # No early stopping: every trial the first night keeps is COMPLETE (ASHA would leave one PRUNED).
    sweep = write_sweep(ROOT / "search_spaces" / "smoke.yaml", tmp_path / "smoke.yaml", **{"search.scheduler": "none"})
    first = subprocess.Popen([sys.executable, "harness/nightly.py", "--sweep", sweep, "--storage", root, "--date",
                              "2026-12-01"], cwd=ROOT, env={**os.environ, "RAY_TMPDIR": temp}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not storage.exists(f"{journal}.lease") and time.time() < deadline and first.poll() is None:
            time.sleep(0.5)
        assert storage.exists(f"{journal}.lease"), "the first night never took the journal's lease"
        t0 = time.monotonic()
        rc = nightly.main(["--sweep", sweep, "--storage", root, "--date", "2026-12-02"])
        refused_after = time.monotonic() - t0
        captured = capsys.readouterr()
        assert first.poll() is None, "the first night ended before the second was refused"
        assert rc == cli.EXIT_BAD_INPUT
        error = captured.err.strip().splitlines()[-1]
        assert error.startswith(f"error: {journal}: the study journal is in use by night 2026-12-01 of smoke"), error
        assert "night 2026-12-02" not in captured.out  # refused before Ray: it never announced its night
        assert refused_after < 30  # the first night's heartbeat (every 15 s) was seen, no wait for its time to live
        stdout, stderr = communicate_or_fail(first, 500, "the first night")
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert first.returncode == 0, stdout[-3000:] + stderr[-3000:]
    store = StudyStore(journal)
    for phase in ("stage1", "stage2"):  # smoke.yaml plans 2 search trials a phase: both kept, both finished
        assert [t.state for t in store.trials(f"smoke-{phase}")] == [optuna.trial.TrialState.COMPLETE] * 2
    assert not storage.exists(f"{journal}.lease")  # released at the night's end
    assert not storage.exists(f"{root}/nightly/2026-12-02")  # the refused night wrote nothing
