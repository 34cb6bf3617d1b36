"""Ray Tune's MLflow logger, made to survive a tracking server that goes away in the middle of a sweep.

Tune calls its callbacks in the driver, between trial events: a logger that raises ends the sweep, and one that
waits on a dead server (MLflow retries for minutes by default) stalls every trial's reports. This one logs as Ray's
``MLflowLoggerCallback`` does until MLflow first fails, then warns once, logs nothing more, and keeps the reason
in ``stopped`` for the sweep's report. Kept apart from harness/mlflow_log.py because it imports Ray Tune, which
the sweep commands load only once their input has been checked.
"""

from __future__ import annotations

import sys
import time

from ray.air.integrations.mlflow import MLflowLoggerCallback

from harness.mlflow_log import error_line


class TolerantMLflowLogger(MLflowLoggerCallback):
    stopped: str | None = None  # why tracking stopped; None while it works

    def _guarded(self, what: str, call) -> None:
        if self.stopped is not None:
            return
        try:
            call()
        except Exception as exc:  # noqa: BLE001 - the store's errors, and any in Ray's bookkeeping: both stop tracking
            self.stopped = (f"{time.strftime('%H:%M:%S')} while logging {what}: {type(exc).__name__}: "
                            f"{error_line(exc, self.tracking_uri)}")
            print(f"warning: MLflow tracking stopped ({self.stopped}); training goes on, the report says so",
                  file=sys.stderr, flush=True)

    def setup(self, *args, **kwargs) -> None:
        self._guarded("the experiment", lambda: super(TolerantMLflowLogger, self).setup(*args, **kwargs))

    def log_trial_start(self, trial) -> None:
        self._guarded("a trial's start", lambda: super(TolerantMLflowLogger, self).log_trial_start(trial))

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        self._guarded("a result", lambda: super(TolerantMLflowLogger, self).log_trial_result(iteration, trial, result))

    def log_trial_end(self, trial, failed: bool = False) -> None:
        self._guarded("a trial's end", lambda: super(TolerantMLflowLogger, self).log_trial_end(trial, failed))
