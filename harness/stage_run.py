"""One training run of one stage: what the torch loop trains (LoopSpec) and where the run lives.

Built at the edge (a Tune trial, train.py) from the sweep and the run's layout, then handed whole to
the Ray Train worker. The loop itself sees only ``run.spec``, which holds no URIs.
"""

from __future__ import annotations

import dataclasses

from harness.config import DataConfig, SweepConfig, TrainSettings
from harness.errors import ConfigError
from harness.hyperparams import Hyperparams
from harness.loop import LoopSpec
from harness.objective import Objective
from harness.run_layout import StageLayout


@dataclasses.dataclass(frozen=True)
class StageRunConfig:
    spec: LoopSpec  # what is trained: stage, profile, loss, training settings, hyperparameters
    layout: StageLayout  # where its checkpoints, samples and metrics go
    dataset_uri: str
    data: DataConfig
    epochs: int
    objective: Objective = Objective()  # the sweep's objective: what the run reports and which checkpoint is "best"
    stage1_checkpoint: str | None = None  # Stage-II: the frozen Stage-I generator's checkpoint URI

    def __post_init__(self) -> None:
        if self.spec.stage == 2 and not self.stage1_checkpoint:
            raise ConfigError("stage1_checkpoint: Stage-II needs a trained Stage-I checkpoint")
        if self.epochs < 1:
            raise ConfigError(f"epochs: must be >= 1, got {self.epochs}")

    @property
    def stage(self) -> int:
        return self.spec.stage

    @property
    def train(self) -> TrainSettings:
        return self.spec.train

    @classmethod
    def from_sweep(cls, sweep: SweepConfig, layout: StageLayout, dataset_uri: str, epochs: int, hparams: Hyperparams,
                   stage1_checkpoint: str | None = None, train: TrainSettings | None = None) -> StageRunConfig:
        """``train`` replaces the sweep's training settings (a confirmation run's own seed)."""
        return cls(spec=LoopSpec.from_sweep(sweep, hparams, train), layout=layout, dataset_uri=dataset_uri,
                   data=sweep.data, epochs=epochs, objective=sweep.objective, stage1_checkpoint=stage1_checkpoint)

    def to_dict(self) -> dict:
        """JSON-ready, for a checkpoint's meta.json."""
        return dataclasses.asdict(self)
