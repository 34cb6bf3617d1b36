"""The Tune function trainable: a flat Tune dict -> typed StageRunConfig -> TorchTrainer per stage.

Three phases share it: ``stage1`` and ``stage2`` (the staged strategy; Stage-II trials also choose
one of the top-k Stage-I checkpoints as ``stage1_parent``) and ``joint`` (each trial trains Stage-I
then Stage-II with its own ``s1.*`` / ``s2.*`` values). Runs are named by trial id, so a restored
trial finds its own checkpoints.
"""

from __future__ import annotations

import dataclasses
import json

from ray import tune

from harness import storage
from harness.checkpoint import best
from harness.config import STAGE_PARAMS, StageRunConfig, SweepConfig, check_param_value
from harness.confirm import config_id
from harness.fit import fit_stage


@dataclasses.dataclass(frozen=True)
class PhaseContext:
    """Everything a trial needs besides its sampled values; passed once through the object store."""

    sweep: SweepConfig
    sweep_root: str  # <storage>/<sweep name>
    storage_root: str
    dataset_uri: str
    phase: str  # stage1 | stage2 | joint
    stage1_parents: tuple[str, ...] = ()  # stage2: the top-k Stage-I checkpoint URIs
    # A confirmation run of the phase when set: the trial's config is {candidate: index, train_seed: seed}
    # and trains candidates[index] (a search config's values) with that training seed.
    candidates: tuple[dict, ...] = ()


def _params(config: dict, stage: int, prefix: str = "") -> dict:
    return {p: check_param_value(p, config[prefix + p]) for p in STAGE_PARAMS[stage] if prefix + p in config}


def stage_trial(config: dict, ctx: PhaseContext) -> None:
    trial_id = tune.get_context().get_trial_id()
    sweep = ctx.sweep
    mode = sweep.search.mode
    if ctx.candidates:  # a confirmation run: a chosen config, trained again with a fresh seed
        source, config, train_seed = "confirm", dict(ctx.candidates[int(config["candidate"])]), int(config["train_seed"])
    else:
        source, train_seed = "search", sweep.train.seed
    trial_rel = f"{sweep.name}/trials/{trial_id}"
    trial_uri = storage.join(ctx.storage_root, trial_rel)
    info = {"trial_id": trial_id, "phase": ctx.phase, "params": config, "source": source, "train_seed": train_seed,
            "config_id": config_id(config)}
    storage.write_bytes(storage.join(trial_uri, "params.json"), json.dumps(info, default=str).encode())
    train = dataclasses.replace(sweep.train, seed=train_seed)

    def fit(stage: int, params: dict, epochs: int, parent: str | None) -> None:
        run = StageRunConfig.from_sweep(sweep, stage, storage.join(trial_uri, f"stage{stage}"), ctx.dataset_uri, epochs,
                                        params, parent, train=train)
        fit_stage(run, sweep.resources, f"{trial_rel}/stage{stage}", ctx.storage_root,
                  sweep.search.max_failures, in_tune=True)

    if ctx.phase == "stage1":
        fit(1, _params(config, 1), sweep.stage1.epochs, None)
    elif ctx.phase == "stage2":
        rank = min(int(config["stage1_parent"]), len(ctx.stage1_parents) - 1)  # fewer survivors than top_k
        parent = ctx.stage1_parents[rank]
        fit(2, _params(config, 2), sweep.stage2.epochs, parent)
    else:
        fit(1, _params(config, 1, "s1."), sweep.stage1.epochs, None)
        parent = best(storage.join(trial_uri, "stage1"), sweep.search.objective, mode)
        if parent is None:  # Stage-I diverged: its worst-case result is already reported
            return
        fit(2, _params(config, 2, "s2."), sweep.stage2.epochs, parent)
