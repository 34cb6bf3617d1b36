"""A sweep's search space (harness/search_space.py ParamSpecs) as Optuna distributions: what the searcher,
the replayed searches and the parameter importances share. Ray-free, so the report can use it."""

from __future__ import annotations

import optuna

from harness.search_space import ParamSpec


def optuna_distribution(spec: ParamSpec) -> optuna.distributions.BaseDistribution:
    if spec.distribution == "loguniform":
        return optuna.distributions.FloatDistribution(spec.low, spec.high, log=True)
    if spec.distribution == "uniform":
        return optuna.distributions.FloatDistribution(spec.low, spec.high)
    if spec.distribution == "int":
        return optuna.distributions.IntDistribution(int(spec.low), int(spec.high))
    return optuna.distributions.CategoricalDistribution(list(spec.choices))


def optuna_space(specs: dict[str, ParamSpec], prefix: str = "") -> dict[str, optuna.distributions.BaseDistribution]:
    """Each searched parameter's distribution, by name (``prefix`` + name: joint trials use s1. and s2.)."""
    return {prefix + name: optuna_distribution(spec) for name, spec in specs.items()}
