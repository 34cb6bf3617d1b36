"""A stage's search space in a sweep file: one ParamSpec per searched hyperparameter.

The range is data (compare_gan style): distribution, low/high or choices, and the default evaluated first.
Every spec is checked against the stage's hyperparameter dataclass (harness/hyperparams.py), so a range
can only yield values the training loop accepts. harness/config.py builds a sweep's sections with it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from harness import hyperparams
from harness.config_fields import build, field
from harness.errors import ConfigError

DISTRIBUTIONS = ("loguniform", "uniform", "int", "categorical")


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One search dimension: compare_gan style, the range is data (distribution, low, high, default)."""

    distribution: str = field("uniform", str)
    default: Any = field(None, (int, float, bool, str), optional=True)
    low: float | None = field(None, (int, float), optional=True)
    high: float | None = field(None, (int, float), optional=True)
    choices: list | None = field(None, list, optional=True)

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ConfigError(f"distribution: {self.distribution!r} is not one of {', '.join(DISTRIBUTIONS)}")
        if self.distribution == "categorical":
            if not self.choices:
                raise ConfigError("choices: a categorical parameter needs a non-empty list")
            if self.default not in self.choices:
                raise ConfigError(f"default: {self.default!r} is not among the choices {self.choices}")
            return
        if self.low is None or self.high is None:
            raise ConfigError(f"a {self.distribution} parameter needs low and high")
        for name in ("low", "high", "default"):
            value = getattr(self, name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value):
                raise ConfigError(f"{name}: must be a finite number, got {value}")
        if self.low >= self.high:
            raise ConfigError(f"low: must be below high ({self.low} >= {self.high})")
        if self.distribution == "loguniform" and self.low <= 0:
            raise ConfigError(f"low: a loguniform range must be > 0, got {self.low}")
        if self.distribution == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ConfigError("an int range needs integer low and high")
        if self.default is None or isinstance(self.default, (bool, str)):
            raise ConfigError(f"default: a {self.distribution} parameter needs a numeric default")
        if not self.low <= self.default <= self.high:
            raise ConfigError(f"default: {self.default} is outside [{self.low}, {self.high}]")

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a point of this dimension (a choice, or a number within [low, high])."""
        if self.distribution == "categorical":
            return value in self.choices
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        return numeric and self.low <= value <= self.high and (self.distribution != "int" or float(value).is_integer())

    def describe(self) -> str:
        return f"one of {self.choices}" if self.distribution == "categorical" else f"in [{self.low}, {self.high}]"


def _check_against_hyperparams(stage: int, name: str, spec: ParamSpec) -> None:
    """Every value the spec can yield is a valid value of the stage's hyperparameter ``name``."""
    kind = hyperparams.kind(stage, name)
    if kind in (bool, str) and spec.distribution != "categorical":
        raise ConfigError(f"distribution: {name} takes {kind.__name__} values: give it categorical choices")
    if kind is int and spec.distribution not in ("int", "categorical"):
        raise ConfigError(f"distribution: {name} is an integer: use int or categorical, not {spec.distribution}")
    where = ("choices", spec.choices) if spec.distribution == "categorical" else ("low", [spec.low, spec.high])
    for value in where[1]:
        try:
            hyperparams.CLASSES[stage](**{name: value})
        except ConfigError as exc:
            raise ConfigError(f"{where[0]}: {str(exc).removeprefix(name + ': ')}") from exc


def parse_search(stage: int):
    """The parser of a stage's ``search`` mapping for config_fields.build: name -> ParamSpec, each checked."""
    allowed = hyperparams.names(stage)

    def parse(data: Any, path: str) -> dict[str, ParamSpec]:
        data = data or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of parameter -> spec")
        specs = {}
        for name, spec in data.items():
            if name not in allowed:
                other = hyperparams.names(3 - stage)
                hint = f" (it is a Stage-{'I' * (3 - stage)} parameter)" if name in other else ""
                raise ConfigError(f"{path}.{name}: unknown parameter{hint}; allowed: {', '.join(allowed)}")
            if not isinstance(spec, dict):  # a bare value fixes the parameter
                spec = {"distribution": "categorical", "choices": [spec], "default": spec}
            specs[name] = build(ParamSpec, spec, f"{path}.{name}")
            try:
                _check_against_hyperparams(stage, name, specs[name])
            except ConfigError as exc:
                raise ConfigError(f"{path}.{name}.{exc}") from exc
        return specs

    return parse
