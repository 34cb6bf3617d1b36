"""MLflow tracking of a sweep: the sweep is a parent run, every trial a child run.

On when the sweep names ``tracking.mlflow_uri`` or MLflow's standard ``MLFLOW_TRACKING_URI`` is set.
Ray's ``MLflowLoggerCallback`` logs each trial (its Tune config as params, every evaluation's metrics
by epoch) as a run tagged with the parent's id, which makes it a child in MLflow. When the sweep ends,
``SweepRun.finish`` adds what the callback cannot see: each trial's hyperparameters (a confirmation
trial's Tune config holds only a candidate index and a seed), its final sample grid, and the sweep's
report and results table on the parent. Phases resumed with ``--resume`` are not logged again (Tune
restores a run without its callbacks). MLflow is an optional dependency: ``pip install -e '.[tracking]'``.
"""

from __future__ import annotations

import json
import os
import tempfile

from harness import storage
from harness.config import SweepConfig
from harness.errors import ConfigError
from harness.run_layout import SweepLayout

SWEEP_TAG = "harness.sweep"  # the sweep's storage URI: a resumed sweep finds its parent run by it


def tracking_uri(sweep: SweepConfig) -> str | None:
    return sweep.tracking.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


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
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(sweep.name)
        self.experiment_id = (experiment.experiment_id if experiment is not None else
                              self.client.create_experiment(sweep.name, artifact_location=_artifact_root(uri)))
        found = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = '{layout.uri}'",
                                        max_results=1)
        self.parent_id = found[0].info.run_id if found else self.client.create_run(
            self.experiment_id, run_name=sweep.name, tags={SWEEP_TAG: layout.uri}).info.run_id

    def callback(self, tune_run: str):
        """Ray Tune's MLflow logger for one Tune run (a phase's search or its confirmation runs, by its name):
        its trials become children of the sweep, tagged with that name."""
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        return MLflowLoggerCallback(tracking_uri=self.uri, experiment_name=self.sweep.name,
                                    tags={"mlflow.parentRunId": self.parent_id, "harness.phase": tune_run})

    def finish(self, status: str = "FINISHED") -> None:
        """Each child's hyperparameters and final sample grid, the report on the parent; ends the parent."""
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
