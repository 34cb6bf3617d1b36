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
from harness.mlflow_log import SWEEP_REQUEST_ENV, SweepRun, check_tracking, redacted
from harness.run_layout import SweepLayout
from tests.conftest import ROOT, free_port, write_sweep

SMOKE = load_sweep(str(ROOT / "search_spaces" / "smoke.yaml"))


@pytest.fixture
def no_tracking_env(monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
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


def test_a_tracking_server_that_does_not_answer_is_refused_in_seconds_without_its_password(no_tracking_env):
    port = free_port()  # nothing listens there
    sweep = replaced(SMOKE, "", tracking=replaced(SMOKE.tracking, "tracking",
                                                  mlflow_uri=f"http://ops:s3cret@127.0.0.1:{port}"))
    no_tracking_env.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    no_tracking_env.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # the user's own setting
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as refused:
        check_tracking(sweep)
    assert time.perf_counter() - t0 < 20  # MLflow's own retries would wait minutes
    line = str(refused.value)
    assert line.startswith(f"tracking.mlflow_uri: http://ops:***@127.0.0.1:{port} cannot be reached (")
    assert "start the tracking server" in line and "s3cret" not in line
    # The probe's budget is not left behind, and the user's setting is kept.
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"


def test_a_uri_keeps_everything_but_its_password_in_error_lines():
    assert redacted("postgresql://mlflow:pw@db:5432/mlflow") == "postgresql://mlflow:***@db:5432/mlflow"
    assert redacted("sqlite:///runs/mlflow.db") == "sqlite:///runs/mlflow.db"


def test_a_sqlite_store_passes_and_no_uri_checks_nothing(no_tracking_env, tmp_path):
    check_tracking(SMOKE)
    no_tracking_env.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    check_tracking(SMOKE)


def test_the_sweep_command_refuses_a_file_store_before_ray_starts(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_ALLOW_FILE_STORE", "RAY_ADDRESS")}
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
    env = {**{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}, "RAY_ADDRESS": f"127.0.0.1:{free_port()}"}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "harness/tune.py", "--smoke-test", "--storage", str(tmp_path / "runs")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and time.perf_counter() - t0 < 60  # ray.init alone waits minutes
    line = done.stderr.strip()
    assert line.startswith(f"error: RAY_ADDRESS: {env['RAY_ADDRESS']} does not answer (connection refused)")
    assert len(line.splitlines()) == 1


def test_a_store_that_fails_before_the_first_trial_stops_tracking_and_the_logger_pickles_as_tune_does(
        no_tracking_env, tmp_path, capsys):
    import ray.cloudpickle

    broken = tmp_path / "mlflow.db"
    broken.write_bytes(b"this is not a database")
    run = SweepRun(SMOKE, SweepLayout(str(tmp_path / "runs"), SMOKE.name), f"sqlite:///{broken}")
    assert "while opening the sweep's run" in run.stopped and run.callbacks("stage1") == []
    assert "warning: MLflow tracking stopped" in capsys.readouterr().err
    good = SweepRun(SMOKE, SweepLayout(str(tmp_path / "runs2"), SMOKE.name), f"sqlite:///{tmp_path}/ok.db")
    (logger,) = good.callbacks("stage1")
    logger.stopped = "10:00:00 while logging a result: ConnectionError: gone"
    copy = ray.cloudpickle.loads(ray.cloudpickle.dumps(logger))  # Tune pickles the RunConfig into tuner.pkl
    assert type(copy).__name__ == "TolerantMLflowLogger" and copy.stopped == logger.stopped


def test_the_experiment_name_from_the_environment_is_used_by_the_sweep_and_its_trials(no_tracking_env, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    no_tracking_env.setenv("MLFLOW_TRACKING_URI", uri)
    no_tracking_env.setenv("MLFLOW_EXPERIMENT_NAME", "team-gan")
    check_tracking(SMOKE)
    run = SweepRun(SMOKE, SweepLayout(str(tmp_path / "runs"), SMOKE.name), uri)
    assert run.client.get_experiment(run.experiment_id).name == "team-gan"
    (logger,) = run.callbacks("stage1")
    assert logger.experiment_name == "team-gan"


def test_a_deleted_experiment_or_an_unknown_experiment_id_is_refused_in_one_line(no_tracking_env, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    no_tracking_env.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri)
    client.delete_experiment(client.create_experiment(SMOKE.name))  # the sweep's own name, deleted in the UI
    with pytest.raises(ConfigError) as refused:
        check_tracking(SMOKE)
    line = str(refused.value)
    assert line.startswith(f"the sweep's name: MLflow experiment '{SMOKE.name}' (id ") and "is deleted; restore it" in line
    no_tracking_env.setenv("MLFLOW_EXPERIMENT_NAME", "elsewhere")  # the fix the line names
    check_tracking(SMOKE)
    assert client.get_experiment_by_name("elsewhere") is None, "a check creates nothing"
    no_tracking_env.setenv("MLFLOW_EXPERIMENT_ID", "424242")
    with pytest.raises(ConfigError, match=r"^MLFLOW_EXPERIMENT_ID: 424242 is not an experiment of sqlite:///"):
        check_tracking(SMOKE)
    kept = client.create_experiment("elsewhere")
    no_tracking_env.setenv("MLFLOW_EXPERIMENT_ID", kept)  # an id that exists wins, as in Ray's logger
    run = SweepRun(SMOKE, SweepLayout(str(tmp_path / "runs"), SMOKE.name), uri)
    assert run.experiment_id == kept


class MlflowServer:
    """``mlflow server`` (sqlite backend) on a free 127.0.0.1 port, in its own process group so that stopping it
    ends its workers too."""

    def __init__(self, workdir) -> None:
        self.port, self.workdir = free_port(), workdir
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self) -> None:
        import urllib.request

        with open(self.workdir / "server.log", "w") as log:
            self.proc = subprocess.Popen(
                [os.path.join(os.path.dirname(sys.executable), "mlflow"), "server", "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1",
                 "--backend-store-uri", f"sqlite:///{self.workdir}/mlflow.db"],
                cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.proc.poll() is None, (self.workdir / "server.log").read_text()[-3000:]
            try:
                if urllib.request.urlopen(f"{self.uri}/health", timeout=2).read() == b"OK":
                    return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"mlflow server did not start; see {self.workdir / 'server.log'}")

    def stop(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group this test started: the server and its workers
            self.proc.wait()


@pytest.mark.slow
def test_a_tracking_server_that_goes_away_mid_sweep_leaves_complete_results_and_a_report_that_says_so(
        ray_local, no_tracking_env, tmp_path, capsys):
    import threading

    from harness import tune as tune_cmd
    from harness.results import read_parquet
    from harness.trial_ends import Ending

    (tmp_path / "mlflow").mkdir()
    server = MlflowServer(tmp_path / "mlflow")
    server.start()
    no_tracking_env.setenv("MLFLOW_TRACKING_URI", server.uri)
    for name, value in SWEEP_REQUEST_ENV.items():  # what the sweep would set in this process, set so it is undone
        no_tracking_env.setenv(name, value)
    runs = tmp_path / "runs"
    stopped_at: list[float] = []
    sweep_ended = threading.Event()

    def stop_after_the_first_evaluation() -> None:
        while not list(runs.glob("smoke/trials/*/stage1/metrics/epoch-*.json")):
            if sweep_ended.wait(0.2):
                return
        server.stop()
        stopped_at.append(time.time())

    killer = threading.Thread(target=stop_after_the_first_evaluation, daemon=True)
    killer.start()
    try:
        sweep = write_sweep(ROOT / "search_spaces" / "smoke.yaml", tmp_path / "smoke.yaml",
                            **{"search.scheduler": "none"})
        code = tune_cmd.main(["--sweep", sweep, "--storage", str(runs)])
    finally:
        sweep_ended.set()
        killer.join(timeout=30)
        server.stop()
    out, err = capsys.readouterr()
    assert code == 0, out[-3000:] + err[-3000:]
    assert stopped_at, "the sweep ended before its first evaluation was written"
    served = (tmp_path / "mlflow" / "server.log").read_text()
    assert served.count("POST /api/2.0/mlflow/runs/create") >= 2, "tracked (the parent and a trial) before the stop"
    assert err.count("warning: MLflow tracking stopped") == 1, err[-3000:]  # warned once, then quiet
    from harness.sweep_record import SweepRecord
    from harness.trial_ends import sweep_run_ends

    record = SweepRecord.load(str(runs / "smoke" / "sweep.json"))
    rows = read_parquet(str(runs / "smoke" / "results.parquet"))
    for e in sweep_run_ends(record.sweep, record, rows):  # every planned trial of every Tune run finished
        assert e.counts.get(Ending.FINISHED) == e.planned, e
    assert record.tracking_stopped and "127.0.0.1" in record.tracking_stopped
    report = (runs / "smoke" / "report" / "leaderboard.md").read_text()
    assert "**MLflow tracking stopped during the sweep**" in report
    assert "MLflow tracking stopped during the sweep" in (runs / "smoke" / "report" / "leaderboard.html").read_text()
