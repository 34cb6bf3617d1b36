"""Settings from the environment are input: an MLflow tracking URI or a RAY_ADDRESS that cannot be used is refused
before Ray in one line, and a tracking store that fails in the middle of a sweep stops tracking, not the sweep."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from harness.config import load_sweep
from harness.config_fields import replaced
from harness.errors import ConfigError
from harness.mlflow_log import SweepRun, check_tracking
from harness.run_layout import SweepLayout
from tests.conftest import ROOT, free_port

SMOKE = load_sweep(str(ROOT / "search_spaces" / "smoke.yaml"))


@pytest.fixture
def no_tracking_env(monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_file_store_that_mlflow_refuses_is_refused_naming_the_variable_and_the_fix(no_tracking_env, tmp_path):
    no_tracking_env.setenv("MLFLOW_TRACKING_URI", f"file://{tmp_path}/mlruns")
    with pytest.raises(ConfigError) as refused:
        check_tracking(SMOKE)
    line = str(refused.value)
    assert line.startswith(f"MLFLOW_TRACKING_URI: file://{tmp_path}/mlruns is a file store") and "\n" not in line
    assert "sqlite:///" in line and "MLFLOW_ALLOW_FILE_STORE=true" in line
    no_tracking_env.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the user's opt-out is honoured
    check_tracking(SMOKE)


def test_a_tracking_server_that_does_not_answer_is_refused_in_seconds(no_tracking_env):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    sweep = replaced(SMOKE, "", tracking=replaced(SMOKE.tracking, "tracking", mlflow_uri=uri))
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"^tracking.mlflow_uri: {uri} cannot be reached \(.*\); start the"):
        check_tracking(sweep)
    assert time.perf_counter() - t0 < 20  # MLflow's own retries would wait minutes
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the probe's budget is not left behind


def test_a_sqlite_store_passes_and_no_uri_checks_nothing(no_tracking_env, tmp_path):
    check_tracking(SMOKE)
    no_tracking_env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    check_tracking(SMOKE)


def test_the_sweep_command_refuses_a_file_store_before_ray_starts(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_ALLOW_FILE_STORE"}
    env["MLFLOW_TRACKING_URI"] = f"file://{tmp_path}/mlruns"
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "harness/tune.py", "--smoke-test", "--storage", str(tmp_path / "runs")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and time.perf_counter() - t0 < 60
    assert done.stderr.strip().startswith("error: MLFLOW_TRACKING_URI: file://") and len(done.stderr.strip().splitlines()) == 1
    assert "Ray" not in done.stdout + done.stderr  # refused before Ray started


class _DeadStore:
    """What Ray's MLflow util meets when the server has gone: every call raises."""

    def __init__(self) -> None:
        self.calls = 0

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls += 1
            raise ConnectionError("Connection refused")
        return call


def test_a_store_that_fails_mid_sweep_stops_tracking_once_and_the_sweep_goes_on(no_tracking_env, tmp_path, capsys):
    run = SweepRun(SMOKE, SweepLayout(str(tmp_path / "runs"), SMOKE.name), f"sqlite:///{tmp_path}/mlflow.db")
    (logger,) = run.callbacks("stage1")
    logger.setup()  # the store still works: the experiment is set up
    dead = _DeadStore()
    logger.mlflow_util = dead
    logger.log_trial_start(object())  # raises inside: caught
    logger.log_trial_result(1, object(), {"fid": 1.0})
    logger.log_trial_end(object())
    assert dead.calls == 1, "after the first failure nothing more is sent"
    assert "ConnectionError: Connection refused" in run.stopped and "a trial's start" in run.stopped
    assert capsys.readouterr().err.count("warning: MLflow tracking stopped") == 1
    assert run.callbacks("stage2") == [], "a later phase does not try again"
    run.finish()  # leaves the parent unfinished, with a warning, and raises nothing
    assert "left unfinished" in capsys.readouterr().err


def test_a_ray_address_where_nothing_answers_is_refused_in_one_line(tmp_path):
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{free_port()}"}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "harness/tune.py", "--smoke-test", "--storage", str(tmp_path / "runs")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and time.perf_counter() - t0 < 60  # ray.init alone waits minutes
    line = done.stderr.strip()
    assert line.startswith(f"error: RAY_ADDRESS: {env['RAY_ADDRESS']} does not answer (connection refused)")
    assert len(line.splitlines()) == 1
