"""The sweep's objective: which metric, which direction is better, and over how many evaluations.

Every "which run is better" in the harness goes through one ``Objective``: the searcher and the
scheduler (Tune's metric and mode), confirmation rankings, the best checkpoint of a run, the reports,
the parameter importances and the nightly leaderboard.

A run's objective value after an evaluation is the mean of its last ``window`` evaluations of the
metric (fewer while it has fewer), computed by the worker and reported under ``Objective.key``
beside the raw metric. With ``window: 1`` the key is the metric itself. Averaging the last few
evaluations damps a GAN's evaluation-to-evaluation swings, which come from the training's cycling
more than from the evaluation set (docs/PERFORMANCE.md, objective noise).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from harness.errors import ConfigError

# Each metric a sweep can optimise, and the direction that is better.
METRICS = {"fid": "min", "kid": "min", "fidelity": "max", "conditioning": "max", "inception_score": "max"}
# What a diverged run reports: worse than any real value, finite so that Tune and Optuna accept it.
WORST = {"fid": 1e6, "kid": 1e6, "fidelity": 0.0, "conditioning": -1.0, "inception_score": 0.0}
# The scale a metric's confidence interval is computed on (confirm.SeedSummary): FID and IS are positive, so
# their intervals are taken on the log scale; caption fidelity is a share in [0, 1], taken on the logit scale;
# the unbiased KID estimate and conditioning (below chance) can be negative, so their intervals are the plain one.
INTERVAL_SCALES = {"fid": "log", "kid": "linear", "fidelity": "logit", "conditioning": "linear", "inception_score": "log"}
# Metrics that only the shapes judge computes (real datasets are scored by an Inception network).
SHAPES_ONLY = ("fidelity", "conditioning", "kid")

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Objective:
    metric: str = "fid"
    window: int = 1  # evaluations averaged: the last ``window`` of the run

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"objective: {self.metric!r} is not one of {', '.join(METRICS)}")
        if self.window < 1:
            raise ConfigError(f"objective_window: must be >= 1 (1: the last evaluation alone), got {self.window}")

    @property
    def mode(self) -> str:
        """Tune's and Ray's word for the direction: ``min`` or ``max``."""
        return METRICS[self.metric]

    @property
    def lower_is_better(self) -> bool:
        return self.mode == "min"

    @property
    def key(self) -> str:
        """The result key that holds the objective's value: the metric, or its windowed mean."""
        return self.metric if self.window == 1 else f"{self.metric}_last{self.window}_mean"

    @property
    def interval_scale(self) -> str:
        return INTERVAL_SCALES[self.metric]

    @property
    def worst(self) -> float:
        return WORST[self.metric]

    def describe(self) -> str:
        """How a report names it: ``fid`` or ``fid, mean of the last 3 evaluations``."""
        return self.metric if self.window == 1 else f"{self.metric}, mean of the last {self.window} evaluations"

    def run_value(self) -> str:
        """What one run scores, in words: ``the last evaluation's fid`` or ``the mean fid of the last 3 evaluations``."""
        return (f"the last evaluation's {self.metric}" if self.window == 1
                else f"the mean {self.metric} of the last {self.window} evaluations")

    def direction_words(self) -> str:
        return "lower is better" if self.lower_is_better else "higher is better"

    # ---- the value of a run ----

    def smoothed(self, values: Sequence[float]) -> float:
        """The objective after the last of ``values`` (a run's metric at each evaluation, in order)."""
        if not values:
            raise ValueError("smoothed: a run with no evaluation has no objective value")
        recent = values[-self.window:]
        return sum(recent) / len(recent)

    def after_each(self, values: Sequence[float]) -> list[float]:
        """The objective after each of a run's evaluations, in order (what the worker reports, one at a time)."""
        return [self.smoothed(values[:i + 1]) for i in range(len(values))]

    def value_of(self, result: dict) -> float | None:
        """The objective's value in a result or results row; None when absent or not a number."""
        return _finite(result.get(self.key))

    # ---- comparisons ----

    def sort_key(self, value: float | None) -> float:
        """Ascending order is best first; a missing or NaN value sorts last."""
        value = _finite(value)
        if value is None:
            return math.inf
        return value if self.lower_is_better else -value

    def better(self, a: float | None, b: float | None) -> bool:
        """``a`` is strictly better than ``b``."""
        return self.sort_key(a) < self.sort_key(b)

    def best(self, items: Iterable[T], value: Callable[[T], float | None]) -> T | None:
        """The item with the best value (the first of ties); None when no item has a value."""
        scored = [item for item in items if _finite(value(item)) is not None]
        return min(scored, key=lambda item: self.sort_key(value(item))) if scored else None

    def ranked(self, items: Iterable[T], value: Callable[[T], float | None]) -> list[T]:
        """The items best first (stable for ties; items without a value last)."""
        return sorted(items, key=lambda item: self.sort_key(value(item)))

    def quality(self, value: float | None) -> float | None:
        """Larger is better for every objective: the value itself, or 1 / value for one to minimise.
        What the nightly leaderboard divides by hours (quality per GPU-hour)."""
        value = _finite(value)
        if value is None:
            return None
        if not self.lower_is_better:
            return value
        return 1.0 / value if value > 0 else None

    def optuna_direction(self) -> str:
        return "minimize" if self.lower_is_better else "maximize"


def _finite(value) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None
