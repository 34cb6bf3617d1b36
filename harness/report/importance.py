"""Parameter importances of a phase's search, computed only when there are enough trials to mean
something (Optuna's PED-ANOVA evaluator over the completed trials)."""

from __future__ import annotations

import optuna

from harness.config import SweepConfig
from harness.objective import Objective
from harness.optuna_space import optuna_space
from harness.phase import Phase
from harness.results import params_of

# Importances from a handful of trials rank noise: Optuna's evaluators fit a model of the objective
# over the search space, and with 5 parameters that needs a few dozen completed trials before the
# ranking is stable (docs/RANKING.md). Below this the report says so instead of printing numbers.
MIN_TRIALS_FOR_IMPORTANCE = 30
IMPORTANCE_METHOD = "PED-ANOVA (Optuna's default evaluator)"


def importances(entries: list[dict], sweep: SweepConfig, phase: Phase, objective: Objective,
                study_trials: list | None = None) -> tuple[dict[str, float], int]:
    """Optuna's PED-ANOVA importances and the number of completed trials they rest on.

    Computed over ``study_trials`` (a persistent study's finished trials, all nights) when given,
    else over the ranked search trials; empty below MIN_TRIALS_FOR_IMPORTANCE."""
    if phase is Phase.JOINT:
        space = {**optuna_space(sweep.stage1.search, "s1."), **optuna_space(sweep.stage2.search, "s2.")}
    else:
        space = optuna_space(sweep.stage(phase.final_stage).search)
    if study_trials is not None:
        trials = [t for t in study_trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
        return _importances(trials, objective), len(trials)
    trials = []
    for e in entries:
        if e["final_status"] == "diverged":
            continue
        params = {k: v for k, v in params_of(e).items() if k in space}
        try:
            params = {k: (int(v) if isinstance(space[k], optuna.distributions.IntDistribution) else v) for k, v in params.items()}
            trials.append(optuna.trial.create_trial(params=params, distributions={k: space[k] for k in params},
                                                    value=objective.value_of(e)))
        except ValueError:
            continue
    return _importances(trials, objective), len(trials)


def _importances(trials: list, objective: Objective) -> dict[str, float]:
    if len(trials) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a throw-away study, not a run to log
    study = optuna.create_study(direction=objective.optuna_direction())
    study.add_trials(trials)
    try:
        return {k: round(v, 3) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError):
        return {}
