"""Each private Ray or Optuna API harness/ray_compat.py uses, checked against the installed versions:
an upgrade that moves one fails here, by name."""

from __future__ import annotations

import optuna
import pytest
import ray

from harness import ray_compat
from harness.objective import Objective
from harness.searcher import make_searcher


def test_the_autoscaler_status_key_and_internal_kv_exist():
    from ray._private import ray_constants
    from ray.experimental import internal_kv

    assert isinstance(ray_constants.DEBUG_AUTOSCALING_STATUS, (str, bytes)), "ray_constants.DEBUG_AUTOSCALING_STATUS moved"
    assert callable(internal_kv._internal_kv_get) and callable(internal_kv._internal_kv_initialized), \
        "ray.experimental.internal_kv lost _internal_kv_get/_internal_kv_initialized"
    if not ray.is_initialized():
        assert ray_compat.autoscaler_status() is None  # no cluster: no report, and no exception


def test_the_reported_cluster_config_reader_reads_a_plain_cluster_as_having_no_node_groups(ray_local):
    state = ray._private.state.state
    assert callable(getattr(state, "get_cluster_config", None)), "ray._private.state.state.get_cluster_config moved"
    assert ray_compat.reported_node_groups() == []  # a local `ray.init` cluster: no autoscaler config reported


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
    searcher = make_searcher(space, [], Objective("fid"), seed=0, final_stage=1)
    searcher.suggest("t")
    assert hasattr(searcher, attribute), f"ray.tune.search.optuna.OptunaSearch lost {attribute}"
    # What ray_compat relies on each attribute being: the study, the live trial by Tune id, the told ids.
    value = getattr(searcher, attribute)
    expected = {"_ot_study": optuna.Study, "_ot_trials": dict, "_completed_trials": set}[attribute]
    assert isinstance(value, expected), f"OptunaSearch.{attribute} is a {type(value).__name__} now"
    if attribute == "_ot_trials":
        assert isinstance(value["t"], optuna.trial.Trial)


def test_a_pruned_tell_reaches_the_study_once():
    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    searcher = make_searcher(space, [], Objective("fid"), seed=0, final_stage=1)
    searcher.suggest("t")
    ray_compat.tell_optuna_pruned(searcher, "t")
    assert ray_compat.optuna_search_has_told(searcher, "t")
    assert ray_compat.optuna_search_knows(searcher, "t") and not ray_compat.optuna_search_knows(searcher, "other")
    assert [t.state for t in searcher._ot_study.get_trials()] == [optuna.trial.TrialState.PRUNED]


def _restored_search(limit: int = 1):
    """An Optuna search as Tune restores it: the searcher, its ConcurrencyLimiter, its SearchGenerator."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.search_generator import SearchGenerator

    space = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    limiter = ConcurrencyLimiter(make_searcher(space, [], Objective("fid"), seed=0, final_stage=1), max_concurrent=limit)
    generator = SearchGenerator(limiter)
    generator._total_samples = 2
    return generator, limiter


def _trial(trial_id: str, status: str):
    from ray.tune.experiment import Trial

    trial = Trial("trainable", trial_id=trial_id, stub=True)
    trial.set_status(status)
    return trial


def test_a_searcher_saved_before_its_live_trial_finished_is_reconciled_and_suggests_again():
    # Saved while t1 ran; the trial list saved after t1 finished and before t2 was created. Restored as they
    # are, the limiter waits for t1 forever: the restored run hangs.
    generator, limiter = _restored_search()
    assert limiter.suggest("t1") is not None
    generator._counter = 1
    trials = [_trial("t1", "TERMINATED")]
    assert limiter.suggest("t2") is None
    changes = ray_compat.reconcile_restored_search(generator, trials)
    assert any("live trials" in c for c in changes), changes
    assert limiter.suggest("t2") is not None and not generator.is_finished()


def test_a_trial_list_newer_than_the_searcher_neither_adds_a_trial_nor_crashes_when_it_ends():
    # The trial list has t2 (pending), created after the searcher's state was saved.
    generator, limiter = _restored_search()
    limiter.suggest("t1")
    generator._counter = 1
    trials = [_trial("t1", "TERMINATED"), _trial("t2", "PENDING")]
    ray_compat.reconcile_restored_search(generator, trials)
    assert generator.is_finished(), "a third trial would be created for 2 samples"
    assert limiter.live_trials == {"t2"}
    limiter.on_trial_result("t2", {"fid": 41.0, "training_iteration": 1})
    limiter.on_trial_complete("t2", {"fid": 40.0, "status": "finished", "stage": 1, "training_iteration": 1})
    assert limiter.live_trials == set()


def test_a_consistent_restore_is_left_alone_and_a_grid_is_never_touched():
    from ray.tune.search import BasicVariantGenerator

    generator, limiter = _restored_search()
    limiter.suggest("t1")
    generator._counter = 1
    assert ray_compat.reconcile_restored_search(generator, [_trial("t1", "RUNNING")]) == []
    assert limiter.live_trials == {"t1"}
    assert ray_compat.reconcile_restored_search(BasicVariantGenerator(), [_trial("t1", "TERMINATED")]) == []


def test_restores_are_reconciled_through_tune_controller_resume():
    from ray.tune.execution.tune_controller import TuneController

    original = TuneController.resume
    try:
        ray_compat.reconcile_search_on_restore()
        ray_compat.reconcile_search_on_restore()  # idempotent: wrapped once
        assert TuneController.resume.harness_reconciles
        assert TuneController.resume.__closure__ is not None
        assert original in [c.cell_contents for c in TuneController.resume.__closure__]
    finally:
        TuneController.resume = original


def test_a_tune_run_with_only_its_tuner_pickle_has_no_saved_trials(tmp_path):
    from ray.tune.execution.tune_controller import TuneController

    assert "{}" in TuneController.CKPT_FILE_TMPL, "TuneController.CKPT_FILE_TMPL changed form"
    (tmp_path / "tuner.pkl").write_bytes(b"")  # what a Tuner writes before its first trial
    assert not ray_compat.has_saved_trials(str(tmp_path))
    (tmp_path / TuneController.CKPT_FILE_TMPL.format("2026-12-03_12-55-02")).write_text("{}")
    assert ray_compat.has_saved_trials(str(tmp_path))
    assert not ray_compat.has_saved_trials(str(tmp_path / "absent"))
