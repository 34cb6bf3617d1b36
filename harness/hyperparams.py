"""The searchable hyperparameters of each StackGAN stage: one frozen dataclass per stage.

A hyperparameter's name is written here, and in sweep files, and nowhere else. Sweep files' search
spaces are checked against these fields (config.py), Tune's sampled dicts become these dataclasses
at the trial's edge (``from_sampled``), and the training loop reads typed attributes. The defaults
are the paper's values (docs/REFERENCE.md); a sweep file's defaults are the first point it evaluates.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from harness.errors import ConfigError
from models.config import STAGE2_INITS


def _hp(default, kind: type, least: float | None = None, choices: tuple = ()):
    """A hyperparameter field: its type, and its lower bound (exclusive for floats) or its choices."""
    return dataclasses.field(default=default, metadata={"kind": kind, "least": least, "choices": choices})


class _Validated:
    """Coerces sampled values (numpy scalars, a float for an int) to each field's type, then checks it;
    an error names the field."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _check(f, getattr(self, f.name)))


def _check(f: dataclasses.Field, value: Any) -> Any:
    kind, least, choices = f.metadata["kind"], f.metadata["least"], f.metadata["choices"]
    if kind is str:
        if value not in choices:
            raise ConfigError(f"{f.name}: {value!r} is not one of {', '.join(choices)}")
        return value
    if kind is bool:
        if isinstance(value, str) or value not in (0, 1):  # numpy's bool_ is no bool
            raise ConfigError(f"{f.name}: expected true or false, got {value!r}")
        return bool(value)
    if isinstance(value, (bool, str)) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise ConfigError(f"{f.name}: expected a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{f.name}: must be a finite number, got {value}")
    if kind is int:
        number = int(round(number))
        if number < least:
            raise ConfigError(f"{f.name}: must be >= {least}, got {number}")
        return number
    if number <= least:
        raise ConfigError(f"{f.name}: must be > {least}, got {number}")
    return number


@dataclasses.dataclass(frozen=True)
class Stage1Hyperparams(_Validated):
    # Weight of the conditioning-augmentation KL term in G's loss: it keeps the text code smooth. The
    # paper writes 1; every released config uses 2.0.
    kl_weight: float = _hp(2.0, float, least=0.0)
    # Adam learning rates of G and D (betas 0.5, 0.999), halved every 100 epochs: the released configs.
    lr_g: float = _hp(2e-4, float, least=0.0)
    lr_d: float = _hp(2e-4, float, least=0.0)
    z_dim: int = _hp(100, int, least=1)  # noise size: variety beyond the caption
    c_dim: int = _hp(128, int, least=1)  # conditioning-augmentation code size: how much of the caption G sees


@dataclasses.dataclass(frozen=True)
class Stage2Hyperparams(_Validated):
    kl_weight: float = _hp(2.0, float, least=0.0)  # as Stage-I: the paper trains both stages alike
    lr_g: float = _hp(2e-4, float, least=0.0)
    lr_d: float = _hp(2e-4, float, least=0.0)
    c_dim: int = _hp(128, int, least=1)  # Stage-II's own conditioning code (its own CA layer)
    # Noise added to Stage-II: 0 is the paper, whose Stage-II takes its variety from the Stage-I image.
    z_dim_stage2: int = _hp(0, int, least=0)
    # Word attention before the residual blocks (AttnGAN-style; not in the paper): needs word features,
    # which the precomputed char-CNN-RNN embeddings do not have.
    attention: bool = _hp(False, bool)
    # scratch (the paper) redraws the image from the encoded Stage-I image; residual adds a learned
    # correction, starting at zero, to the upsampled Stage-I image (models/config.py Stage2Config.init).
    stage2_init: str = _hp("scratch", str, choices=STAGE2_INITS)

    @property
    def uses_word_features(self) -> bool:
        return self.attention


Hyperparams = Stage1Hyperparams | Stage2Hyperparams
CLASSES: dict[int, type] = {1: Stage1Hyperparams, 2: Stage2Hyperparams}


def names(stage: int) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(CLASSES[stage]))


# Every hyperparameter once, Stage-I's first: the columns of a results table and a report.
ALL_NAMES: tuple[str, ...] = tuple(dict.fromkeys((*names(1), *names(2))))


def kind(stage: int, name: str) -> type:
    """The Python type of a stage's hyperparameter (int, float, bool or str)."""
    return next(f.metadata["kind"] for f in dataclasses.fields(CLASSES[stage]) if f.name == name)


def from_sampled(stage: int, values: Mapping[str, Any], prefix: str = "") -> Hyperparams:
    """The stage's hyperparameters from a flat (Tune) dict; keys not in it keep the paper's value.
    ``prefix`` selects one stage's keys of a joint trial (``s1.`` / ``s2.``)."""
    return CLASSES[stage](**{n: values[prefix + n] for n in names(stage) if prefix + n in values})


def paper_defaults(stage: int) -> Hyperparams:
    return CLASSES[stage]()
