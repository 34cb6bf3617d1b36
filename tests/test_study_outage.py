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

from harness.study import StudyStore
from tests.conftest import ROOT, communicate_or_fail, write_sweep
from tests.postgres_server import available, running_postgres

pytestmark = pytest.mark.skipif(not available(), reason="PostgreSQL's initdb and pg_ctl are not installed "
                                                        "(apt-get install postgresql)")


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
def test_a_night_whose_study_database_restarts_mid_night_finishes_with_every_trial(tmp_path):
    with running_postgres() as pg:
        root = tmp_path / "runs"
        # No early stopping: every trial is COMPLETE (ASHA stops one of smoke.yaml's 2 now and then: PRUNED).
        sweep = write_sweep(ROOT / "search_spaces" / "smoke.yaml", tmp_path / "smoke.yaml",
                            **{"search.scheduler": "none"})
        temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
        night = subprocess.Popen(
            [sys.executable, "harness/nightly.py", "--sweep", sweep, "--storage", str(root),
             "--date", "2026-12-01", "--study", pg.url], cwd=ROOT, env={**os.environ, "RAY_TMPDIR": temp},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            # Down for 8 s once the first Stage-I evaluation is written: the searcher hears of every evaluation, so
            # calls land in the outage.
            deadline = time.time() + 300
            trials = root / "nightly" / "2026-12-01" / "smoke" / "trials"
            while not list(trials.glob("*/stage1/metrics/epoch-*.json")) and time.time() < deadline:
                assert night.poll() is None, night.communicate()
                time.sleep(0.2)
            pg.stop()
            time.sleep(8)
            pg.start()
            stdout, stderr = communicate_or_fail(night, 500, "the night")
        finally:
            if night.poll() is None:
                os.killpg(night.pid, signal.SIGKILL)
                night.wait()
        assert night.returncode == 0, stdout[-3000:] + stderr[-3000:]
        assert "the study database is unreachable; retrying" in stderr and "the study database is back" in stderr
        store = StudyStore(pg.url)
        for phase in ("stage1", "stage2"):  # smoke.yaml plans 2 search trials a phase
            assert [t.state for t in store.trials(f"smoke-{phase}")] == [optuna.trial.TrialState.COMPLETE] * 2
        assert "Stage-I search: 2 of 2 planned trials done" in stdout
