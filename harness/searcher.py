"""The seeded Optuna searcher as Tune sees it, Tune's schedulers and trial sizing (the search spaces as Optuna
distributions are harness/optuna_space.py's)."""

from __future__ import annotations

import math

import optuna
from ray.tune.search.optuna import OptunaSearch

from harness import ray_compat
from harness.config import ResourcesConfig
from harness.objective import Objective


class BudgetAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna the truth about trials that did not run their whole budget.

    Ray's OptunaSearch reports a trial stopped early by ASHA (or by the time budget) as COMPLETE
    with its low-budget value, which biases TPE, most of all in a study reused across nights. Here
    such a trial is PRUNED: Optuna keeps its per-evaluation values (reported by on_trial_result)
    and TPE ranks it by them, below trials that finished. A diverged trial did run to its end: it
    is COMPLETE with the worst-case value it reported.
    """

    def __init__(self, *args, final_stage: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._final_stage = final_stage

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self._unknown(trial_id):
            return
        try:
            super().on_trial_result(trial_id, result)
        except optuna.exceptions.UpdateFinishedTrialError:
            ray_compat.mark_optuna_told(self, trial_id)  # finished before the driver died (below)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self._unknown(trial_id):
            return
        ran_to_end = result is not None and (
            result.get("status") == "diverged"
            or (result.get("status") == "finished" and result.get("stage") == self._final_stage))
        try:
            if error or not result or ran_to_end or ray_compat.optuna_search_has_told(self, trial_id):
                super().on_trial_complete(trial_id, result, error)
            else:
                ray_compat.tell_optuna_pruned(self, trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Told before the driver died: Tune restored this searcher from a state saved before the
            # tell, and the restored run reports the trial's end again. The study already has it.
            ray_compat.mark_optuna_told(self, trial_id)

    def _unknown(self, trial_id: str) -> bool:
        """A trial this searcher never suggested: Tune restored a trial list saved after the searcher's own
        state (the two are separate files, uploaded one by one; docs/DESIGN.md, pitfalls). OptunaSearch would
        raise KeyError and end the restored run, every time it is resumed. The trial trains and lands in the
        results; only the study goes without it."""
        if ray_compat.optuna_search_knows(self, trial_id):
            return False
        untracked = self.__dict__.setdefault("_untracked", set())  # absent from a searcher pickled by older code
        if trial_id not in untracked:
            untracked.add(trial_id)
            print(f"searcher: trial {trial_id} is not in the restored searcher state; its outcome is not told to "
                  f"the Optuna study", flush=True)
        return True


def make_sampler(name: str, seed: int, startup_trials: int = 10) -> optuna.samplers.BaseSampler:
    """One of Optuna's samplers by its sweep-file name (config.SAMPLERS), seeded."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=startup_trials)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup_trials)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "qmc":  # scrambled Sobol: a seed only means something with scrambling
        return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_asynchronous_seeding=False)
    raise ValueError(f"unknown sampler {name!r}")


def make_scheduler(name: str, max_epochs: int, grace_period: int, reduction_factor: int):
    """One of Ray Tune's trial schedulers by its sweep-file name (config.SCHEDULERS); None for 'none'.

    Every scheduler counts epochs (``training_iteration``: one report per evaluation, eval_every 1)."""
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

    grace = min(grace_period, max_epochs)
    if name in ("asha", "hyperband"):
        # hyperband is the asynchronous Hyperband of the ASHA paper (Li et al. 2020): ASHA over every
        # bracket from the most to the least aggressive. Ray's synchronous HyperBandScheduler pauses
        # trials, and a Train V2 run inside a Tune trial leaves Tune no checkpoint to pause with.
        brackets = 1
        if name == "hyperband":
            while grace * reduction_factor ** brackets <= max_epochs:
                brackets += 1
        return ASHAScheduler(time_attr="training_iteration", max_t=max_epochs, grace_period=grace,
                             reduction_factor=reduction_factor, brackets=brackets)
    if name == "median":
        return MedianStoppingRule(time_attr="training_iteration", grace_period=grace, min_samples_required=3)
    if name == "none":
        return None
    raise ValueError(f"unknown scheduler {name!r}")


def make_searcher(space: dict, start_points: list[dict], objective: Objective, seed: int, final_stage: int = 2,
                  study_name: str | None = None, storage=None, sampler: str = "tpe",
                  startup_trials: int = 10) -> OptunaSearch:
    """Optuna's ``sampler`` (multivariate TPE by default), seeded; ``start_points`` (the paper's defaults,
    then any known-good configs) are evaluated first. With ``study_name`` and ``storage`` the study
    persists and a new sweep continues it.
    """
    kwargs = {}
    if study_name is not None:
        kwargs.update(study_name=study_name, storage=storage)
    return BudgetAwareOptunaSearch(space=space, metric=objective.key, mode=objective.mode,
                                   points_to_evaluate=list(start_points) or None,
                                   sampler=make_sampler(sampler, seed, startup_trials), final_stage=final_stage,
                                   **kwargs)


def trial_resources(resources: ResourcesConfig) -> dict:
    """What one Tune trial reserves for itself. In local mode the trial process trains, so it holds
    the worker's CPUs/GPUs; with Ray Train workers the trial is a driver that holds nothing, because
    Train workers start all-or-nothing and a driver holding a CPU can starve them on a small machine."""
    if resources.workers == 0:
        return resources.per_worker()
    return {"CPU": 0.01}  # Tune refuses an empty request; a token fraction never starves the workers


def max_concurrent_trials(resources: ResourcesConfig, cluster: dict, num_samples: int) -> int:
    """How many trials fit at once in ``cluster`` (totals, e.g. the autoscaler's maximum)."""
    n_workers = max(1, resources.workers)
    need = {name: n_workers * amount for name, amount in resources.per_worker().items()}
    fits = [math.floor(cluster.get(name, 0) / amount + 1e-9) for name, amount in need.items() if amount > 0]
    return max(1, min([num_samples, *fits]))
