"""A nightly study database (``--study``) is input: a missing driver or a server that cannot be reached is refused
before Ray in one line that names --study and never the password."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from harness.errors import ConfigError
from harness.preflight import check_study
from tests.conftest import POSTGRES_MISSING, ROOT, free_port


def test_a_postgresql_server_that_does_not_answer_is_refused_in_seconds_without_its_password():
    url = f"postgresql://night:s3cret@127.0.0.1:{free_port()}/studies"  # nothing listens there
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as refused:
        check_study(url)
    assert time.perf_counter() - t0 < 15
    line = str(refused.value)
    assert line.startswith("--study postgresql://night:***@127.0.0.1:") and "cannot connect (" in line
    assert "Connection refused" in line and "s3cret" not in line and "\n" not in line


def test_a_missing_postgresql_driver_is_refused_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an install without the postgres extra has
    with pytest.raises(ConfigError) as refused:
        check_study("postgresql://night:s3cret@db.example:5432/studies")
    line = str(refused.value)
    assert line.startswith("--study postgresql://night:***@db.example:5432/studies: its database driver is not installed")
    assert "pip install -e '.[postgres]'" in line and "s3cret" not in line


def test_journals_and_sqlite_need_no_server():
    check_study("s3://bucket/nightly/optuna/shapes.journal")
    check_study("sqlite:///runs/optuna.db")


def test_the_nightly_command_refuses_an_unreachable_study_before_ray_starts(tmp_path):
    url = f"postgresql://night:s3cret@127.0.0.1:{free_port()}/studies"
    done = subprocess.run([sys.executable, "harness/nightly.py", "--sweep", "search_spaces/smoke.yaml", "--storage",
                           str(tmp_path / "runs"), "--study", url], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    line = done.stderr.strip()
    assert line.startswith("error: --study postgresql://night:***@127.0.0.1:") and len(line.splitlines()) == 1
    assert "Ray" not in done.stdout + done.stderr and "s3cret" not in done.stdout + done.stderr


@pytest.fixture(scope="module")
def postgres():
    from tests.postgres_server import available, postgres_server

    if not available():  # .ci/run installs Debian's postgresql; a laptop may not have it
        pytest.skip(POSTGRES_MISSING)
    with postgres_server() as url:
        yield url


def test_a_real_postgresql_server_passes_and_a_wrong_password_is_refused_in_one_line(postgres):
    check_study(postgres)
    wrong = postgres.replace(":pg-test-password@", ":not-the-password@")
    with pytest.raises(ConfigError) as refused:
        check_study(wrong)
    line = str(refused.value)
    assert "cannot connect (" in line and "password authentication failed" in line
    assert "not-the-password" not in line and "\n" not in line


_DRIVER = """
import sys, optuna
from harness.study import StudyStore
optuna.logging.set_verbosity(optuna.logging.WARNING)
store = StudyStore(sys.argv[1])
study = optuna.create_study(study_name="shared-stage1", storage=store.storage(), load_if_exists=True)
study.optimize(lambda t: t.suggest_float("lr", 1e-5, 1e-2, log=True), n_trials=int(sys.argv[2]))
"""


def test_two_drivers_on_one_postgresql_study_at_once_keep_every_trial(postgres):
    # What two overlapping nights do to their shared study, without the training: each driver adds its trials
    # to one study through the harness's StudyStore, both at once.
    procs = [subprocess.Popen([sys.executable, "-c", _DRIVER, postgres, "25"], cwd=ROOT) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    from harness.study import StudyStore

    trials = StudyStore(postgres).trials("shared-stage1")
    assert len(trials) == 50 and all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.number for t in trials}) == 50
