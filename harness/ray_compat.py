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
