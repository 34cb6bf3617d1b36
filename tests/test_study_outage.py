"""A study database that restarts or goes away for a while does not end the night (harness/study.py,
ReconnectingRDBStorage), against a real PostgreSQL server the tests start, stop and start again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import optuna
import pytest

from harness.results import read_parquet
from harness.study import StudyStore
from tests.conftest import POSTGRES_MISSING, ROOT, write_sweep
from tests.postgres_server import available, running_postgres

pytestmark = pytest.mark.skipif(not available(), reason=POSTGRES_MISSING)


def _objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("lr", 1e-5, 1e-2, log=True)


def test_a_restarted_database_and_a_short_outage_keep_every_trial(capsys):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with running_postgres() as pg:
        study = optuna.create_study(study_name="s", storage=StudyStore(pg.url).storage())
        study.optimize(_objective, n_trials=2)
        pg.stop()
        pg.start()  # every pooled connection was cut; plain RDBStorage then fails with StorageInternalError
        study.optimize(_objective, n_trials=2)
        assert "unreachable" not in capsys.readouterr().err  # the pool's ping replaced the cut connections
        pg.stop()
        threading.Timer(3.0, pg.start).start()
        t0 = time.monotonic()
        study.optimize(_objective, n_trials=1)  # made while the server is down: waits for it, then goes on
        assert time.monotonic() - t0 >= 2.5
        err = capsys.readouterr().err
        assert "the study database is unreachable; retrying for up to 120 s" in err and "is back" in err
        assert "pg-test-password" not in err and "postgresql://harness:***@127.0.0.1" in err
        trials = StudyStore(pg.url).trials("s")
        assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 5


@pytest.mark.slow
def test_two_nights_at_once_on_a_study_database_that_restarts_mid_night_keep_every_trial(tmp_path):
    # Two nights of one sweep overlap (a long night and the next, started 5 s apart) on one PostgreSQL study and one
    # storage root, and the database goes down for 8 s while both train. Both finish; the study keeps every trial of
    # both; the leaderboard keeps both nights (that its writes take turns is test_journal_lease's: two nights'
    # writes rarely meet here).
    dates = ("2026-12-01", "2026-12-02")
    with running_postgres() as pg:
        root = tmp_path / "runs"
        # No early stopping: every trial is COMPLETE (ASHA stops one of smoke.yaml's 2 now and then: PRUNED).
        sweep = write_sweep(ROOT / "search_spaces" / "smoke.yaml", tmp_path / "smoke.yaml",
                            **{"search.scheduler": "none"})
        nights, logs = [], []  # each night's (stdout, stderr) files, read back by path
        try:
            for i, date in enumerate(dates):
                if i:
                    time.sleep(5)
                temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # each night its own local Ray
                logs.append((tmp_path / f"{date}.out", tmp_path / f"{date}.err"))
                with open(logs[-1][0], "w") as out, open(logs[-1][1], "w") as err:
                    nights.append(subprocess.Popen(
                        [sys.executable, "harness/nightly.py", "--sweep", sweep, "--storage", str(root), "--date",
                         date, "--study", pg.url], cwd=ROOT, env={**os.environ, "RAY_TMPDIR": temp}, stdout=out,
                        stderr=err, text=True, start_new_session=True))
            # Down for 8 s once both nights have written a Stage-I evaluation: their searchers hear of every
            # evaluation, so calls land in the outage.
            deadline = time.time() + 300
            trials = [root / "nightly" / date / "smoke" / "trials" for date in dates]
            while not all(list(t.glob("*/stage1/metrics/epoch-*.json")) for t in trials) and time.time() < deadline:
                assert all(n.poll() is None for n in nights), _printed(logs)
                time.sleep(0.2)
            pg.stop()
            time.sleep(8)
            pg.start()
            for night in nights:
                night.wait(timeout=max(1.0, deadline + 400 - time.time()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"a night hung:\n{_printed(logs)}")
        finally:
            for night in nights:
                if night.poll() is None:
                    os.killpg(night.pid, signal.SIGKILL)
                    night.wait()
        printed = _printed(logs)
        assert [n.returncode for n in nights] == [0, 0], printed
        stderrs = [err.read_text() for _, err in logs]
        # At least one night called the database in the outage (the other may have been between search phases).
        assert any("the study database is unreachable; retrying" in e and "the study database is back" in e
                   for e in stderrs), printed
        for (out, _), date in zip(logs, dates):
            assert "Stage-I search: 2 of 2 planned trials done" in out.read_text(), (date, printed)
        store = StudyStore(pg.url)
        for phase in ("stage1", "stage2"):  # smoke.yaml plans 2 search trials a phase, a night
            assert [t.state for t in store.trials(f"smoke-{phase}")] == [optuna.trial.TrialState.COMPLETE] * 4
    board = read_parquet(str(root / "leaderboard" / "nights.parquet"))
    assert sorted(r["date"] for r in board) == list(dates)  # neither night wrote its copy over the other's


def _printed(logs) -> str:
    return "\n".join(f"--- {path.name}\n{path.read_text()[-3000:]}" for pair in logs for path in pair
                     if path.exists())
