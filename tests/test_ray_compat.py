"""Each private Ray or Optuna API harness/ray_compat.py uses, checked against the installed versions:
an upgrade that moves one fails here, by name."""

from __future__ import annotations

import optuna
import pytest
import ray

from harness import ray_compat
from harness.searcher import make_searcher


def test_the_autoscaler_status_key_and_internal_kv_exist():
    from ray._private import ray_constants
    from ray.experimental import internal_kv

    assert isinstance(ray_constants.DEBUG_AUTOSCALING_STATUS, (str, bytes)), "ray_constants.DEBUG_AUTOSCALING_STATUS moved"
    assert callable(internal_kv._internal_kv_get) and callable(internal_kv._internal_kv_initialized), \
        "ray.experimental.internal_kv lost _internal_kv_get/_internal_kv_initialized"
    if not ray.is_initialized():
        assert ray_compat.autoscaler_status() is None  # no cluster: no report, and no exception


def test_the_reported_cluster_config_reader_exists():
    state = ray._private.state.state
    assert callable(getattr(state, "get_cluster_config", None)), "ray._private.state.state.get_cluster_config moved"


def test_read_only_node_types_are_recognised():
    from ray.autoscaler._private.util import format_readonly_node_type

    assert format_readonly_node_type("abc") == "node_abc", "the read-only node type format changed"
    assert ray_compat.is_read_only_node_type("abc", "node_abc")
    assert not ray_compat.is_read_only_node_type("abc", "gpu_worker")


def test_tunes_propagated_env_var_list_exists_and_can_be_trimmed(monkeypatch):
    import inspect

    from ray.tune.execution import class_cache

    # Ray's own list, as written in its source (this process may already have trimmed the live one).
    assert "ENV_VARS_TO_PROPAGATE" in inspect.getsource(class_cache) and \
        "AWS_ACCESS_KEY_ID" in inspect.getsource(class_cache), \
        "ray.tune.execution.class_cache no longer propagates the AWS keys: re-check what trials inherit"
    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE", frozenset({"AWS_ACCESS_KEY_ID", "OTHER"}))
    ray_compat.keep_env_vars_out_of_trials(drop={"AWS_ACCESS_KEY_ID"}, add={"AWS_ENDPOINT_URL"})
    assert "AWS_ACCESS_KEY_ID" not in class_cache.ENV_VARS_TO_PROPAGATE
    assert "AWS_ENDPOINT_URL" in class_cache.ENV_VARS_TO_PROPAGATE


@pytest.mark.parametrize("attribute", ["_ot_study", "_ot_trials", "_completed_trials"])
def test_optuna_search_keeps_the_attributes_the_pruned_tell_uses(attribute):
    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    searcher = make_searcher(space, [], "fid", "min", seed=0, final_stage=1)
    searcher.suggest("t")
    assert hasattr(searcher, attribute), f"ray.tune.search.optuna.OptunaSearch lost {attribute}"


def test_a_pruned_tell_reaches_the_study_once():
    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    searcher = make_searcher(space, [], "fid", "min", seed=0, final_stage=1)
    searcher.suggest("t")
    ray_compat.tell_optuna_pruned(searcher, "t")
    assert ray_compat.optuna_search_has_told(searcher, "t")
    assert [t.state for t in searcher._ot_study.get_trials()] == [optuna.trial.TrialState.PRUNED]
