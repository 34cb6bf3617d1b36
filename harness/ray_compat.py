"""Every use of a Ray or Optuna private API, in one place (Ray 2.60, Optuna 4.x).

Each function names what it reads or sets and why no public API does it. tests/test_ray_compat.py
checks each one against the installed versions, so an upgrade that moves one fails there, by name,
instead of deep inside a sweep.
"""

from __future__ import annotations

import json


def autoscaler_status() -> dict | None:
    """The autoscaler's last published status (what ``ray status`` prints), or None before its first
    report. No public API returns the node-type mapping that says whether nodes can be added."""
    from ray._private import ray_constants
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_initialized

    if not _internal_kv_initialized():
        return None
    status = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    try:
        return json.loads(status) if status else None
    except ValueError:
        return None


def reported_node_groups() -> list[dict]:
    """[{"resources": {...}, "max_count": n}] of the cluster config an autoscaler v2 (KubeRay)
    reports to the GCS; [] when none is. The node types a cluster can grow to have no public API."""
    import ray

    config = ray._private.state.state.get_cluster_config()
    if config is None:
        return []
    return [{"resources": dict(g.resources), "max_count": g.max_count} for g in config.node_group_configs]


def is_read_only_node_type(node_id: str, node_type: str) -> bool:
    """True for the anonymous node type the read-only autoscaler of a plain ``ray start`` cluster
    gives each node: such a cluster cannot add nodes."""
    from ray.autoscaler._private.util import format_readonly_node_type

    return node_type == format_readonly_node_type(node_id)


def keep_env_vars_out_of_trials(drop: set[str], add: set[str]) -> None:
    """Ray Tune copies a fixed list of the driver's environment variables into every trial actor's
    runtime_env (ray/tune/execution/class_cache.py ENV_VARS_TO_PROPAGATE); there is no option to
    change the list. Drops ``drop`` from it and adds ``add``."""
    from ray.tune.execution import class_cache

    class_cache.ENV_VARS_TO_PROPAGATE = (frozenset(class_cache.ENV_VARS_TO_PROPAGATE) - drop) | set(add)


def tell_optuna_pruned(searcher, trial_id: str) -> None:
    """Tells the Optuna study behind Ray's OptunaSearch that a trial was pruned. OptunaSearch has no
    way to report a trial state other than COMPLETE or FAIL from a result, so this uses its study
    (``_ot_study``), its trial map (``_ot_trials``) and its record of told trials (``_completed_trials``)."""
    import optuna

    searcher._ot_study.tell(searcher._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
    searcher._completed_trials.add(trial_id)


def mark_optuna_told(searcher, trial_id: str) -> None:
    """Records in OptunaSearch's ``_completed_trials`` that a trial's outcome is in the study."""
    searcher._completed_trials.add(trial_id)


def optuna_search_has_told(searcher, trial_id: str) -> bool:
    """Whether OptunaSearch has already told the study this trial's outcome (``_completed_trials``)."""
    return trial_id in searcher._completed_trials


def optuna_search_knows(searcher, trial_id: str) -> bool:
    """Whether OptunaSearch suggested this trial (its trial map ``_ot_trials``); it raises KeyError on a result
    of any other."""
    return trial_id in searcher._ot_trials


def reconcile_restored_search(search_alg, trials: list) -> list[str]:
    """Makes a restored Tune run's searcher agree with its restored trial list; returns what it changed.

    Tune saves the trial list and the searcher's state (SearchGenerator, its ConcurrencyLimiter, the searcher)
    as separate files that a background sync uploads one by one, so a driver killed during an upload can leave
    them from different moments. Restored as they are:
    - the limiter may hold a trial that has since finished as live. No completion ever comes for it, the limiter
      stays full and the restored run waits forever (most likely what hung a resumed night in CI for 10 minutes);
    - the generator's count of created trials (``_counter``) may count a trial the list lacks (the run ends a
      trial short) or miss one it has (the run creates one trial too many).
    The trial list is the truth: the trials that will run are its unfinished ones. Only a SearchGenerator (an
    Optuna search) is reconciled; a grid (BasicVariantGenerator) keeps its own state."""
    from ray.tune.search.concurrency_limiter import ConcurrencyLimiter
    from ray.tune.search.search_generator import SearchGenerator

    if not isinstance(search_alg, SearchGenerator):
        return []
    changes = []
    if search_alg._counter != len(trials):
        changes.append(f"trials created: {search_alg._counter} in the searcher's state, {len(trials)} in the trial list")
        search_alg._counter = len(trials)
    limiter = search_alg.searcher
    if isinstance(limiter, ConcurrencyLimiter):
        unfinished = {t.trial_id for t in trials if not t.is_finished()}
        if limiter.live_trials != unfinished:
            changes.append(f"live trials: {sorted(limiter.live_trials)} in the searcher's state, "
                           f"{sorted(unfinished)} unfinished in the trial list")
            limiter.live_trials = unfinished
            limiter.num_unfinished_live_trials = len(unfinished)
    return changes


def reconcile_search_on_restore() -> None:
    """Has every Tune restore in this process run ``reconcile_restored_search`` once the run's state is loaded.
    Tune has no hook between loading a run's state and running it, so this wraps ``TuneController.resume``
    (idempotent)."""
    from ray.tune.execution.tune_controller import TuneController

    if getattr(TuneController.resume, "harness_reconciles", False):
        return
    resume = TuneController.resume

    def resume_and_reconcile(self, resume_config) -> None:
        resume(self, resume_config)
        for change in reconcile_restored_search(self._search_alg, self.get_trials()):
            print(f"restore: the searcher's state disagreed with the trial list, which wins: {change}", flush=True)

    resume_and_reconcile.harness_reconciles = True
    TuneController.resume = resume_and_reconcile


def use_callbacks_on_restore(tuner, callbacks: list) -> None:
    """A restored Tuner runs with the callbacks pickled in its tuner.pkl (Ray 2.60: ``TunerInternal._run_config``,
    handed to ``tune.run`` by ``fit``). The restored run gets this sweep's own instead: the MLflow logger whose
    failures the report shows, or none when this sweep does not track. Under Ray Client the Tuner runs on the
    cluster (``_local_tuner`` is None) and keeps its pickled callbacks."""
    if getattr(tuner, "_local_tuner", None) is not None:
        tuner._local_tuner.get_run_config().callbacks = list(callbacks)


def has_saved_trials(tune_path: str) -> bool:
    """Whether a Tune run's directory holds a saved trial list (``experiment_state-*.json``, the file name
    ``TuneController.CKPT_FILE_TMPL``). ``Tuner.can_restore`` looks for tuner.pkl only, which a Tuner writes
    before its first trial: a driver killed between the two leaves a run that restores with no trials and,
    for a grid, no param_space, so it trains one trial with an empty config."""
    import pyarrow.fs as pafs
    from ray.tune.execution.tune_controller import TuneController

    from harness import storage

    prefix, suffix = TuneController.CKPT_FILE_TMPL.split("{}")
    return any(name.startswith(prefix) and name.endswith(suffix)
               for name in storage.list_names(tune_path, pafs.FileType.File))
