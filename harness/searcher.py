"""Search spaces (sweep YAML -> Optuna distributions), the seeded TPE searcher and trial sizing."""

from __future__ import annotations

import datetime
import hashlib
import math

import optuna
from ray.tune.search.optuna import OptunaSearch

from harness.config import ParamSpec, ResourcesConfig


def optuna_distribution(spec: ParamSpec) -> optuna.distributions.BaseDistribution:
    if spec.distribution == "loguniform":
        return optuna.distributions.FloatDistribution(spec.low, spec.high, log=True)
    if spec.distribution == "uniform":
        return optuna.distributions.FloatDistribution(spec.low, spec.high)
    if spec.distribution == "int":
        return optuna.distributions.IntDistribution(int(spec.low), int(spec.high))
    return optuna.distributions.CategoricalDistribution(list(spec.choices))


def optuna_space(specs: dict[str, ParamSpec], prefix: str = "") -> dict[str, optuna.distributions.BaseDistribution]:
    return {prefix + name: optuna_distribution(spec) for name, spec in specs.items()}


def derive_seed(seed: int | None, day: datetime.date | None = None) -> int:
    """The sweep's seed, or one derived from the date: a resumed persistent study with a fixed seed
    replays the same start-up configurations every night (DESIGN.md), so the default varies by day."""
    if seed is not None:
        return seed
    day = day or datetime.date.today()
    return int(hashlib.sha256(day.isoformat().encode()).hexdigest()[:8], 16)


def make_searcher(space: dict, first_point: dict, metric: str, mode: str, seed: int,
                  study_name: str | None = None, storage=None) -> OptunaSearch:
    """Multivariate TPE, seeded; the paper's defaults are the first point evaluated."""
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True)
    kwargs = {}
    if study_name is not None:
        kwargs.update(study_name=study_name, storage=storage)
    return OptunaSearch(space=space, metric=metric, mode=mode, points_to_evaluate=[first_point] if first_point else None,
                        sampler=sampler, **kwargs)


def trial_resources(resources: ResourcesConfig) -> dict:
    """What one Tune trial reserves for itself. In local mode the trial process trains, so it holds
    the worker's CPUs/GPUs; with Ray Train workers the trial is a driver that holds nothing, because
    Train workers start all-or-nothing and a driver holding a CPU can starve them on a small machine."""
    if resources.workers == 0:
        res = {"CPU": resources.cpus_per_worker, **resources.custom_resources_per_worker}
        if resources.gpus_per_worker:
            res["GPU"] = resources.gpus_per_worker
        return res
    return {"CPU": 0.01}  # Tune refuses an empty request; a token fraction never starves the workers


def max_concurrent_trials(resources: ResourcesConfig, cluster: dict, num_samples: int) -> int:
    """How many trials fit at once in ``cluster`` (totals, e.g. the autoscaler's maximum)."""
    n_workers = max(1, resources.workers)
    need = {"CPU": n_workers * resources.cpus_per_worker}
    if resources.gpus_per_worker:
        need["GPU"] = n_workers * resources.gpus_per_worker
    for name, amount in resources.custom_resources_per_worker.items():
        need[name] = n_workers * amount
    fits = [math.floor(cluster.get(name, 0) / amount + 1e-9) for name, amount in need.items() if amount > 0]
    return max(1, min([num_samples, *fits]))
