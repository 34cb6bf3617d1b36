"""Runs one stage of one config as a Ray Train ``TorchTrainer`` and returns its final metrics."""

from __future__ import annotations

from ray.train import FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from harness import storage
from harness.config import ResourcesConfig
from harness.stage_run import StageRunConfig
from harness.worker import read_latest_metrics, train_fn_per_worker


def scaling_config(resources: ResourcesConfig) -> ScalingConfig:
    """workers=0 is Train V2's in-process local mode: no worker group to start (about 10-16 s saved)."""
    return ScalingConfig(
        num_workers=resources.workers,
        use_gpu=resources.gpus_per_worker > 0,
        resources_per_worker=resources.per_worker() if resources.workers else None,
    )


def fit_stage(
    run: StageRunConfig,
    resources: ResourcesConfig,
    max_failures: int = 2,
    in_tune: bool = False,
) -> dict:
    """Trains ``run`` to its last epoch (resuming from its latest checkpoint) and returns the last metrics.

    Ray Train's own run state goes to the run's own directory (``run.layout``, named by the trial),
    so a restarted run finds both Train's state and our checkpoints.
    """
    callbacks = []
    report_to = "train"
    if in_tune:
        if resources.workers == 0:
            report_to = "tune"  # local mode has no controller: the worker reports to Tune itself
        else:
            from ray.tune.integration.ray_train import TuneReportCallback

            callbacks.append(TuneReportCallback())
    trainer = TorchTrainer(
        train_fn_per_worker,
        train_loop_config={"run": run, "report_to": report_to, "resources": resources},
        scaling_config=scaling_config(resources),
        run_config=RunConfig(
            name=run.layout.ray_name,
            storage_path=storage.normalize(run.layout.storage_root),
            # controller_failure_limit: the default (-1) retries forever when workers cannot be placed.
            failure_config=FailureConfig(max_failures=max_failures, controller_failure_limit=3),
            callbacks=callbacks,
        ),
    )
    trainer.fit()
    return read_latest_metrics(run.layout)
