"""The owners of the sweep's words: the Objective (metric, direction, window) and the Phase, on hand-made values."""

from __future__ import annotations

import pytest

from harness.config import sweep_from_dict
from harness.errors import ConfigError
from harness.objective import Objective
from harness.phase import Phase, Source, final_phase, phases, reached_phase


def test_the_objective_ranks_in_its_metrics_direction_and_missing_values_last():
    fid, fidelity = Objective("fid"), Objective("fidelity")
    assert fid.mode == "min" and fidelity.mode == "max" and Objective("kid").lower_is_better
    assert fid.better(400.0, 500.0) and not fid.better(500.0, 500.0) and fidelity.better(0.6, 0.5)
    assert fid.better(400.0, None) and fid.better(400.0, float("nan")) and not fid.better(None, 400.0)
    runs = [{"t": "a", "fid": 520.0}, {"t": "b"}, {"t": "c", "fid": 480.0}, {"t": "d", "fid": float("nan")},
            {"t": "e", "fid": 480.0}]
    assert [r["t"] for r in fid.ranked(runs, fid.value_of)] == ["c", "e", "a", "b", "d"]  # stable for ties
    assert fid.best(runs, fid.value_of)["t"] == "c" and fid.best([{"t": "b"}], fid.value_of) is None
    assert fidelity.best([{"fidelity": 0.3}, {"fidelity": 0.7}], fidelity.value_of) == {"fidelity": 0.7}
    assert fid.value_of({"fid": True}) is None and fid.value_of({"fid": "480"}) is None  # only numbers count
    assert fid.quality(200.0) == pytest.approx(0.005) and fidelity.quality(0.7) == 0.7 and fid.quality(0.0) is None
    assert fid.optuna_direction() == "minimize" and fidelity.optuna_direction() == "maximize"
    assert fid.worst == 1e6 and fidelity.worst == 0.0


def test_a_windowed_objective_is_the_mean_of_the_last_k_evaluations_under_its_own_key():
    three = Objective("fid", window=3)
    assert three.key == "fid_last3_mean" and Objective("fid").key == "fid"
    # 867, 1433, 477, 777: after each, the mean of what there is of the last three.
    history = [867.0, 1433.0, 477.0, 777.0]
    assert [three.smoothed(history[:i]) for i in range(1, 5)] == pytest.approx(
        [867.0, 1150.0, 925.6667, 895.6667], abs=1e-4)
    assert Objective("fid").smoothed(history) == 777.0
    assert three.after_each(history) == [three.smoothed(history[:i]) for i in range(1, 5)]
    assert three.describe() == "fid, mean of the last 3 evaluations" and Objective("kid").describe() == "kid"
    with pytest.raises(ValueError, match="no evaluation"):
        three.smoothed([])


def test_a_sweep_file_names_the_objective_and_its_window_or_is_refused_in_one_line():
    sweep = sweep_from_dict({"search": {"objective": "kid", "objective_window": 2}})
    assert sweep.objective == Objective("kid", 2) and sweep.objective.key == "kid_last2_mean"
    cases = {"search.objective: 'lpips' is not one of fid, kid, fidelity, conditioning, inception_score": {"objective": "lpips"},
             "search.objective_window: must be >= 1": {"objective_window": 0}}
    for message, search in cases.items():
        with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")):
            sweep_from_dict({"search": search})
    with pytest.raises(ConfigError, match=r"^search.objective: kid is computed by the shapes judge only"):
        sweep_from_dict({"data": {"kind": "cub", "uri": "/data/cub", "encoder": "precomputed",
                                  "inception_weights": "/w.pt"}, "search": {"objective": "kid"}})
    with pytest.raises(ConfigError, match=r"^search.top_k: renamed to stage2_parents$"):
        sweep_from_dict({"search": {"top_k": 2}})


def test_phases_map_to_their_stages_tune_runs_and_budgets_in_one_place():
    assert phases("staged") == (Phase.STAGE1, Phase.STAGE2) and phases("joint") == (Phase.JOINT,)
    assert final_phase("staged") is Phase.STAGE2 and final_phase("joint") is Phase.JOINT
    assert [p.final_stage for p in Phase] == [1, 2, 2] and Phase.JOINT.stages == (1, 2)
    assert Phase.STAGE1.tune_run(Source.SEARCH) == "stage1" and Phase.JOINT.tune_run(Source.CONFIRM) == "joint-confirm"
    sweep = sweep_from_dict({"stage1": {"epochs": 16, "search_epochs": 8}, "stage2": {"epochs": 2}})
    assert Phase.STAGE1.epochs(sweep, Source.SEARCH) == 8 and Phase.STAGE1.epochs(sweep, Source.CONFIRM) == 16
    assert Phase.JOINT.epochs(sweep, Source.SEARCH) == 10 and Phase.JOINT.epochs(sweep, Source.CONFIRM) == 18
    # What a report ranks: the last phase of the strategy that has results (an interrupted staged sweep: Stage-I).
    assert reached_phase("staged", ["stage1"]) is Phase.STAGE1 and reached_phase("staged", ["stage2", "stage1"]) is Phase.STAGE2
    assert reached_phase("joint", ["stage1"]) is None
    # The words stay the files' words: a row's phase string compares equal to its Phase.
    assert Phase("stage2") is Phase.STAGE2 and Phase.STAGE2 == "stage2" and f"{Phase.JOINT}" == "joint"
    with pytest.raises(ConfigError, match="^strategy: 'both' is not one of staged, joint$"):
        phases("both")
    with pytest.raises(TypeError, match="source must be a Source"):
        sweep.stage1.budget("search")
    assert sweep.stage(2) is sweep.stage2 and sweep.stage(1) is sweep.stage1
