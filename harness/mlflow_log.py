"""MLflow tracking of a sweep: the sweep is a parent run, every trial a child run.

On when the sweep names ``tracking.mlflow_uri`` or MLflow's standard ``MLFLOW_TRACKING_URI`` is set.
Ray's ``MLflowLoggerCallback`` logs each trial (its Tune config as params, every evaluation's metrics
by epoch) as a run tagged with the parent's id, which makes it a child in MLflow. When the sweep ends,
``SweepRun.finish`` adds what the callback cannot see: each trial's hyperparameters (a confirmation
trial's Tune config holds only a candidate index and a seed), its final sample grid, and the sweep's
report and results table on the parent. A phase resumed with ``--resume`` logs through this sweep's logger
(sweep.py hands it to the restored Tune run in place of the one Tune pickled): a trial resumed from its
checkpoint becomes a new child run. MLflow is an optional dependency: ``pip install -e '.[tracking]'``.

The tracking URI is input like the sweep file: ``check_tracking`` asks the store once before Ray starts, so a
URI that the installed MLflow refuses (a ``file://`` store under MLflow 3) or a server that cannot be reached
ends the command in one line that names where the URI came from (never its password); so does an experiment
setting from the environment that cannot be used (``experiment_id``). If the store fails later,
tracking stops (harness/mlflow_logger.py) and the sweep goes on; the report says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from urllib.parse import urlsplit, urlunsplit

from harness import storage
from harness.config import SweepConfig
from harness.errors import ConfigError
from harness.run_layout import SweepLayout

SWEEP_TAG = "harness.sweep"  # the sweep's storage URI: a resumed sweep finds its parent run by it


# The probe's own budget, unless the user set these: one attempt, a short timeout (MLflow's defaults retry a dead
# server for minutes).
PROBE_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
# During the sweep, unless the user set them: a few retries (a blip) and a timeout that keeps the driver moving.
# Set in the driver's environment for the rest of the process: Tune's logger reads them at every request.
SWEEP_REQUEST_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def tracking_uri(sweep: SweepConfig) -> str | None:
    return sweep.tracking.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def uri_source(sweep: SweepConfig) -> str:
    """Where the tracking URI came from, as a user would look for it."""
    return "tracking.mlflow_uri" if sweep.tracking.mlflow_uri else "MLFLOW_TRACKING_URI"


def experiment_name(sweep: SweepConfig) -> str:
    """The MLflow experiment a sweep logs to: MLflow's standard ``MLFLOW_EXPERIMENT_NAME``, else the sweep's name.
    (``MLFLOW_EXPERIMENT_ID``, when set, wins over both, as in Ray's logger: ``experiment_id``.)"""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or sweep.name


def experiment_id(client, sweep: SweepConfig, uri: str, create: bool = True) -> str | None:
    """The id of the sweep's experiment, made when it does not exist yet (None without ``create``). Raises
    ConfigError in one line, naming the setting, for an ``MLFLOW_EXPERIMENT_ID`` the store does not hold and for a
    deleted experiment: Ray's logger would send the trials' runs elsewhere than their parent's, and MLflow refuses
    runs in a deleted experiment."""
    from mlflow.exceptions import MlflowException

    wanted = os.environ.get("MLFLOW_EXPERIMENT_ID")
    if wanted:
        try:
            experiment = client.get_experiment(wanted)
        except MlflowException:
            experiment = None
        if experiment is None:
            raise ConfigError(f"MLFLOW_EXPERIMENT_ID: {wanted} is not an experiment of {redacted(uri)}; "
                              "unset it, or set it to an existing experiment's id")
        source = "MLFLOW_EXPERIMENT_ID"
    else:
        name = experiment_name(sweep)
        experiment = client.get_experiment_by_name(name)
        if experiment is None and not create:
            return None
        if experiment is None:
            try:
                return client.create_experiment(name, artifact_location=_artifact_root(uri))
            except MlflowException:  # another driver made it a moment ago
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        source = "MLFLOW_EXPERIMENT_NAME" if os.environ.get("MLFLOW_EXPERIMENT_NAME") else "the sweep's name"
    if experiment.lifecycle_stage == "deleted":
        raise ConfigError(f"{source}: MLflow experiment {experiment.name!r} (id {experiment.experiment_id}) is "
                          f"deleted; restore it (mlflow experiments restore --experiment-id {experiment.experiment_id}) "
                          "or log to another name (MLFLOW_EXPERIMENT_NAME)")
    return experiment.experiment_id


def redacted(uri: str) -> str:
    """The URI without its password (``postgresql://user:***@host/db``): what an error line may show."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# What requests and urllib3 say when nothing answers, as MLflow passes it on.
_UNREACHABLE = ("Connection refused", "Max retries exceeded", "Failed to establish a new connection", "timed out",
                "Name or service not known", "Temporary failure in name resolution", "ConnectionError")


@contextlib.contextmanager
def _quick_requests():
    added = [k for k in PROBE_ENV if k not in os.environ]
    os.environ.update({k: PROBE_ENV[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def check_tracking(sweep: SweepConfig) -> None:
    """Raises ConfigError in one line when the sweep's tracking URI cannot be used: MLflow missing, a store the
    installed MLflow refuses, or a server that does not answer. Nothing to check without a URI."""
    uri = tracking_uri(sweep)
    if uri is None:
        return
    source = uri_source(sweep)
    try:
        import mlflow
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError(f"{source}: {uri} is set but MLflow is not installed (pip install -e '.[tracking]')") from None
    with _quick_requests():
        try:
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
            experiment_id(client, sweep, uri, create=False)  # an experiment setting from the environment is input too
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - MLflow raises its own, requests' and the stores' errors alike
            raise ConfigError(f"{source}: {redacted(uri)} {_why_unusable(exc, uri, source, mlflow.__version__)}") from None


def _why_unusable(exc: Exception, uri: str, source: str, version: str) -> str:
    text = str(exc)
    first = error_line(exc, uri) or type(exc).__name__
    if "MLFLOW_ALLOW_FILE_STORE" in text:
        return (f"is a file store, which MLflow {version} refuses: use a database URI such as sqlite:///runs/mlflow.db, "
                "or set MLFLOW_ALLOW_FILE_STORE=true")
    if uri.startswith(("http://", "https://")):
        if any(marker in text for marker in _UNREACHABLE) or isinstance(exc, (ConnectionError, TimeoutError)):
            return f"cannot be reached ({type(exc).__name__}); start the tracking server, or unset {source}"
        return f"answered with an error: {first}"
    return f"cannot be used ({type(exc).__name__}: {first})"


def error_line(exc: Exception, uri: str) -> str:
    """The first line of an MLflow error, at most 200 characters, with the URI's password removed."""
    text = str(exc)
    return (text.splitlines()[0] if text else "").replace(uri, redacted(uri))[:200]


def _artifact_root(uri: str) -> str | None:
    """Where a local sqlite store's artifacts go: beside the database, not in the working directory."""
    if uri.startswith("sqlite:///"):
        return os.path.join(os.path.dirname(os.path.abspath(uri.removeprefix("sqlite:///"))), "mlartifacts")
    return None


class SweepRun:
    def __init__(self, sweep: SweepConfig, layout: SweepLayout, uri: str) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise ConfigError("tracking.mlflow_uri: MLflow is not installed (pip install -e '.[tracking]')") from exc
        self.sweep, self.layout, self.uri = sweep, layout, uri
        self._loggers: list = []
        self._failed: str | None = None
        if uri.startswith(("http://", "https://")):  # a server lost mid-sweep costs seconds per call, not minutes
            for k, v in SWEEP_REQUEST_ENV.items():
                os.environ.setdefault(k, v)
        self.parent_id: str | None = None
        try:  # checked before Ray, but a store can fail in the minutes the dataset build takes
            self.client = MlflowClient(tracking_uri=uri)
            self.experiment_id = experiment_id(self.client, sweep, uri)
            # Ray's logger takes a name; MLFLOW_EXPERIMENT_ID, when set, names the same experiment to it.
            self.experiment_name = self.client.get_experiment(self.experiment_id).name
            found = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = '{layout.uri}'",
                                            max_results=1)
            self.parent_id = found[0].info.run_id if found else self.client.create_run(
                self.experiment_id, run_name=sweep.name, tags={SWEEP_TAG: layout.uri}).info.run_id
        except Exception as exc:  # noqa: BLE001 - the sweep's results are complete without MLflow
            self._failed = f"while opening the sweep's run: {type(exc).__name__}: {error_line(exc, uri)}"
            print(f"warning: MLflow tracking stopped ({self._failed}); training goes on, the report says so",
                  file=sys.stderr, flush=True)

    def callbacks(self, tune_run: str) -> list:
        """Ray Tune's MLflow logger for one Tune run (a phase's search or its confirmation runs, by its name):
        its trials become children of the sweep, tagged with that name. No logger once tracking has stopped."""
        if self.stopped is not None:
            return []
        from harness.mlflow_logger import TolerantMLflowLogger

        logger = TolerantMLflowLogger(tracking_uri=self.uri, experiment_name=self.experiment_name,
                                      tags={"mlflow.parentRunId": self.parent_id, "harness.phase": tune_run})
        self._loggers.append(logger)
        return [logger]

    @property
    def stopped(self) -> str | None:
        """Why tracking stopped during the sweep (the first failure), or None."""
        return next((lg.stopped for lg in self._loggers if lg.stopped is not None), self._failed)

    def finish(self, status: str = "FINISHED") -> None:
        """Each child's hyperparameters and final sample grid, the report on the parent; ends the parent.
        Skipped, with a warning, when tracking stopped during the sweep or fails now: the results are in storage."""
        if self.stopped is not None:
            print(f"warning: MLflow: the sweep's parent run is left unfinished, tracking stopped ({self.stopped})",
                  file=sys.stderr, flush=True)
            return
        try:
            self._finish(status)
        except Exception as exc:  # noqa: BLE001 - the sweep's results are complete without MLflow
            self._failed = f"while finishing: {type(exc).__name__}: {error_line(exc, self.uri)}"
            print(f"warning: MLflow tracking stopped ({self._failed})", file=sys.stderr, flush=True)

    def _finish(self, status: str) -> None:
        children = self.client.search_runs([self.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'")
        with tempfile.TemporaryDirectory(prefix="harness-mlflow-") as tmp:
            for child in children:
                self._complete_child(child, tmp)
            for name in ("leaderboard.html", "leaderboard.md"):
                self._log_file(self.parent_id, self.layout.report_file(name), tmp, "report")
            self._log_file(self.parent_id, self.layout.results, tmp, None)
        self.client.set_terminated(self.parent_id, status=status)

    def _complete_child(self, child, tmp: str) -> None:
        from harness.trial import stage_trial

        # Tune names a trial <trainable>_<trial id>; our trial directories are named by the id.
        trial = self.layout.trial(child.data.tags.get("trial_name", "").removeprefix(f"{stage_trial.__name__}_"))
        if not storage.exists(trial.params):
            return
        info = json.loads(storage.read_bytes(trial.params))
        logged = child.data.params
        for name, value in info["params"].items():
            if name not in logged:
                self.client.log_param(child.info.run_id, name, value)
        for stage in (2, 1):  # the trial's final stage
            run = trial.stage(stage)
            if storage.exists(run.latest_metrics):
                grid = json.loads(storage.read_bytes(run.latest_metrics)).get("sample_grid")
                if grid:
                    self._log_file(child.info.run_id, grid, tmp, f"stage{stage}")
                break

    def _log_file(self, run_id: str, uri: str, tmp: str, artifact_path: str | None) -> None:
        if not storage.exists(uri):
            return
        local = os.path.join(tmp, run_id[:8], os.path.basename(uri))
        os.makedirs(os.path.dirname(local), exist_ok=True)
        with open(local, "wb") as f:
            f.write(storage.read_bytes(uri))
        self.client.log_artifact(run_id, local, artifact_path)


def open_sweep_run(sweep: SweepConfig, layout: SweepLayout) -> SweepRun | None:
    uri = tracking_uri(sweep)
    return SweepRun(sweep, layout, uri) if uri else None
