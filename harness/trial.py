"""The Tune function trainable: a flat Tune dict -> typed StageRunConfig -> TorchTrainer per stage.

Three phases share it: ``stage1`` and ``stage2`` (the staged strategy; Stage-II trials also choose
one of the top Stage-I checkpoints (``search.stage2_parents``) as ``stage1_parent``) and ``joint`` (each trial trains Stage-I
then Stage-II with its own ``s1.*`` / ``s2.*`` values). Runs are named by trial id, so a restored
trial finds its own checkpoints.
"""

from __future__ import annotations

import dataclasses
import json

from ray import tune

from harness import storage
from harness.checkpoint import best
from harness.config import SweepConfig
from harness.fit import fit_stage
from harness.hyperparams import from_sampled
from harness.phase import Phase, Source
from harness.results import config_id
from harness.run_layout import SweepLayout
from harness.stage_run import StageRunConfig


@dataclasses.dataclass(frozen=True)
class PhaseContext:
    """Everything a trial needs besides its sampled values; passed once through the object store."""

    sweep: SweepConfig
    layout: SweepLayout
    dataset_uri: str
    phase: Phase
    stage1_parents: tuple[str, ...] = ()  # stage2: the top Stage-I checkpoint URIs (search.stage2_parents of them)
    # A confirmation run of the phase when set: the trial's config is {candidate: index, train_seed: seed}
    # and trains candidates[index] (a search config's values) with that training seed.
    candidates: tuple[dict, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.phase, Phase):
            raise TypeError(f"PhaseContext.phase must be a Phase, got {self.phase!r}")


def stage_trial(config: dict, ctx: PhaseContext) -> None:
    trial_id = tune.get_context().get_trial_id()
    sweep = ctx.sweep
    if ctx.candidates:  # a confirmation run: a chosen config, trained again with a fresh seed
        source, config, train_seed = Source.CONFIRM, dict(ctx.candidates[int(config["candidate"])]), int(config["train_seed"])
    else:
        source, train_seed = Source.SEARCH, sweep.train.seed
    trial = ctx.layout.trial(trial_id)
    info = {"trial_id": trial_id, "phase": ctx.phase, "params": config, "source": source, "train_seed": train_seed,
            "config_id": config_id(config)}
    storage.write_bytes(trial.params, json.dumps(info, default=str).encode())
    train = dataclasses.replace(sweep.train, seed=train_seed)

    def fit(stage: int, prefix: str, epochs: int, parent: str | None) -> None:
        run = StageRunConfig.from_sweep(sweep, trial.stage(stage), ctx.dataset_uri, epochs,
                                        from_sampled(stage, config, prefix), parent, train=train)
        fit_stage(run, sweep.resources, sweep.search.max_failures, in_tune=True)

    epochs1, epochs2 = sweep.stage1.budget(source), sweep.stage2.budget(source)
    if ctx.phase is Phase.STAGE1:
        fit(1, "", epochs1, None)
    elif ctx.phase is Phase.STAGE2:
        rank = min(int(config["stage1_parent"]), len(ctx.stage1_parents) - 1)  # fewer survivors than stage2_parents
        fit(2, "", epochs2, ctx.stage1_parents[rank])
    else:
        fit(1, "s1.", epochs1, None)
        parent = best(trial.stage(1), sweep.objective)
        if parent is None:  # Stage-I diverged: its worst-case result is already reported
            return
        fit(2, "s2.", epochs2, parent)
